"""Augmentation of training batches (batchgenerators) and its torch resampling."""
