"""One run: assembly, the per-batch unit, the local Distributed Map driver, checkpoint, reports."""
