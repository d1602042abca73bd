"""Data for training: the loader, bag collation, cross-validation splits."""
