"""Training: splits, data loading and augmentation, losses, trainers (variants beside), checkpoints."""
