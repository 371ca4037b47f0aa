"""Test doubles shared by tests and benchmarks: the loopback DynamoDB servers (Python and
the compiled acknowledging one), the Step Functions shim, the command-pipeline cloud, the
pacing simulator, writer fakes, and the import graph of `importer/` (`import_graph`).
Imported one way: `tests.support.X`."""
