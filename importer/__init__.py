"""importer: CSV → DynamoDB MBC CQRS command records, exact about Step Functions."""

__version__ = "0.1.0"
__all__ = ["__version__"]
