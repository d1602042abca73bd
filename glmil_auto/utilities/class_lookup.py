"""Find a class by name among a base class and its subclasses (planners, trainers), so that
variants only need to be defined, never registered."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def find_subclass(base: type[T], name: str, kind: str) -> type[T]:
    """``base`` or the subclass called ``name``; a clear error lists the ``kind``s that exist."""
    found, stack = {}, [base]
    while stack:
        cls = stack.pop()
        found[cls.__name__] = cls
        stack += cls.__subclasses__()
    if name not in found:
        raise ValueError(f"unknown {kind} '{name}'; available: {', '.join(sorted(found))}")
    return found[name]
