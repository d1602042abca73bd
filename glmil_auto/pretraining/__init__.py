"""Self-supervised pretraining."""
