"""Experiment planning: the dataset fingerprint (``fingerprint/``) and the planners that turn it into plans.

Kept free of imports so that importing one part does not load the others.
"""
