"""Inference: prediction on new cases and its explanations (Grad-CAM maps in the input image's geometry)."""
