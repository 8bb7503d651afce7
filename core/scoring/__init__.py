"""Batch scoring without Prefect: the CSV reader, the scorer and its writers."""
