"""Planners, found by class name (``--planner NAME``), so variants need no registration."""

from __future__ import annotations

from glmil_auto.experiment_planning.planners import variants  # noqa: F401  (defines the subclasses)
from glmil_auto.experiment_planning.planners.default_planner import GLMILPlanner
from glmil_auto.utilities.class_lookup import find_subclass


def find_planner(name: str) -> type[GLMILPlanner]:
    """The planner class called ``name``; a clear error lists the ones that exist."""
    return find_subclass(GLMILPlanner, name, "planner")


__all__ = ["GLMILPlanner", "find_planner"]
