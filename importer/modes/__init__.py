"""What to write when the table already holds data: the mode stage and its entity ledger."""
