"""What jobs run on: the Ray Data pipeline, W&B lineage, peak memory."""
