"""Rows to command records: the spec, value rules, and the reference and native engines."""
