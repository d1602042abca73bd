"""The training log's figure (progress.png)."""
