"""Discrimination and calibration numerics: binary metrics, DeLong, survival metrics."""
