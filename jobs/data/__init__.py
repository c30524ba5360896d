"""Datasets in, output directories out: reading rows, scored shards, resuming, the summary."""
