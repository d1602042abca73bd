"""Find classes by name: planners and trainers anywhere in their package (as nnU-Net's
``recursive_find_python_class``), so that a variant in a new file only needs to be defined, never
registered; and encoder classes by their dotted path in the plans (``network_class_name``)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


def _subclasses(base: type[T]) -> dict[str, type[T]]:
    found, stack = {}, [base]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.__name__, cls)
        stack += cls.__subclasses__()
    return found


def import_package_modules(package: str) -> list[ModuleType]:
    """Import ``package`` and every module below it (depth first, sorted by name).

    A module that fails to import is an error, not a silent gap: a broken variant file would
    otherwise only show up as "unknown trainer"."""
    root = importlib.import_module(package)
    modules = [root]
    for info in sorted(pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}."), key=lambda i: i.name):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue  # private helpers (and editor or test scratch files) are not searched
        try:
            modules.append(importlib.import_module(info.name))
        except Exception as exc:  # noqa: BLE001  (re-raised with the module named)
            raise ImportError(f"could not import {info.name} while searching {package} for a class: {exc}") from exc
    return modules


def recursive_find_class(package: str, name: str, base: type[T], kind: str) -> type[T]:
    """The class called ``name`` defined in any module of ``package`` (searched recursively), which
    must be ``base`` or a subclass of it. A clear error lists the ``kind``s that exist."""
    modules = import_package_modules(package)
    candidates = [getattr(m, name) for m in modules if isinstance(getattr(m, name, None), type)]
    for candidate in candidates:
        if issubclass(candidate, base):
            return candidate
    if candidates:
        raise ValueError(f"{kind} '{name}' found in {candidates[0].__module__} is not a subclass of {base.__name__}")
    known = _subclasses(base)  # also classes made at run time (for example by a test)
    if name in known:
        return known[name]
    raise ValueError(f"unknown {kind} '{name}'; available: {', '.join(sorted(known))} "
                     f"(searched every module of {package})")


def find_subclass(base: type[T], name: str, kind: str) -> type[T]:
    """``base`` or the already-imported subclass called ``name``; a clear error lists the ``kind``s that exist."""
    found = _subclasses(base)
    if name not in found:
        raise ValueError(f"unknown {kind} '{name}'; available: {', '.join(sorted(found))}")
    return found[name]


def locate_class(dotted_name: str, base: type | None = None) -> type:
    """The class at ``module.path.ClassName`` (as nnU-Net v2 stores ``network_class_name``)."""
    module_name, _, class_name = dotted_name.rpartition(".")
    if not module_name:
        raise ValueError(f"class name '{dotted_name}' must be a dotted path such as 'package.module.ClassName'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot find class '{dotted_name}' named in the plans: {exc}") from None
    if not isinstance(cls, type) or (base is not None and not issubclass(cls, base)):
        raise ValueError(f"'{dotted_name}' named in the plans is not a {base.__name__ if base else 'class'}")
    return cls
