"""Bytes to ItemReader items to ItemBatcher batches: the CSV reader and the batch cutter."""
