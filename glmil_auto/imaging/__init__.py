"""Image operations shared by the fingerprint, the preprocessing and the predictor.

Placed above experiment_planning and preprocessing in the import order so that both can use it.
"""
