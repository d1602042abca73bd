"""Planners, found by class name (``--planner NAME``), so variants need no registration."""

from __future__ import annotations

from glmil_auto.experiment_planning.planners import variants  # noqa: F401  (defines the subclasses)
from glmil_auto.experiment_planning.planners.default_planner import GLMILPlanner


def _all_subclasses(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _all_subclasses(sub)
    return found


def find_planner(name: str) -> type[GLMILPlanner]:
    """The planner class called ``name``; a clear error lists the ones that exist."""
    classes = {c.__name__: c for c in _all_subclasses(GLMILPlanner)}
    if name not in classes:
        raise ValueError(f"unknown planner '{name}'; available: {', '.join(sorted(classes))}")
    return classes[name]


__all__ = ["GLMILPlanner", "find_planner"]
