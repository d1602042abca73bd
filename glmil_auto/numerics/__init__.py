"""Plain numerics used by several stages (below all of them: they import nothing of the pipeline)."""
