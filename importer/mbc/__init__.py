"""The MBC CQRS framework's records, its command state machine and data sync, in bulk."""
