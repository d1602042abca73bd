"""Preprocessing: canonical orientation, head crop, normalisation, global volume and lesion patches, blosc2 storage."""
