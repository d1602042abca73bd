"""Clinical comparators: the clinical baseline, prognostic scores, multivariable models."""
