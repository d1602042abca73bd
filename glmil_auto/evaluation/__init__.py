"""Evaluation of written predictions against the true outcomes (and the synthetic truth ceiling)."""
