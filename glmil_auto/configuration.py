"""Process-wide defaults that users may override with environment variables."""

from __future__ import annotations

import os


def default_num_processes() -> int:
    """Worker processes for preprocessing-like work: ``$glmil_def_n_proc`` or the core count (max 8)."""
    value = os.environ.get("glmil_def_n_proc")
    if value:
        return max(1, int(value))
    return max(1, min(os.cpu_count() or 1, 8))
