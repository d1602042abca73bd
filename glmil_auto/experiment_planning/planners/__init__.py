"""Planners, found by class name (``--planner NAME``) in any module of this package (searched
recursively), so variants need no registration."""

from __future__ import annotations

from glmil_auto.experiment_planning.planners.default_planner import GLMILPlanner
from glmil_auto.utilities.class_lookup import recursive_find_class

PLANNER_PACKAGE = "glmil_auto.experiment_planning.planners"


def find_planner(name: str) -> type[GLMILPlanner]:
    """The planner class called ``name``; a clear error lists the ones that exist."""
    return recursive_find_class(PLANNER_PACKAGE, name, GLMILPlanner, "planner")


__all__ = ["GLMILPlanner", "find_planner"]
