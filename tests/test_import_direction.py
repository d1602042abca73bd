"""Data flows down the pipeline's stages and imports never go back up (documentation/code_layout.md).

Every ``import`` in ``glmil_auto/``, at module level or inside a function, is read with ``ast``; an
import of a later stage than the importing module's own fails the test, naming the file, the line and
the module. The one exception is the planner, which decides among preprocessing's and the model's
building blocks and measures the network it plans (as nnU-Net's planner does): those imports must sit
inside functions, so that importing a planner never loads torch or mirp.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "glmil_auto"
# earliest first; packages in one tuple are at the same level and may not import each other
# (the foundation level excepted: it imports nothing of the pipeline)
STAGES = (
    ("utilities", "configuration", "paths", "numerics"),
    ("dataset",),
    ("imaging",),
    ("synthetic", "dataset_conversion"),
    ("experiment_planning",),
    ("preprocessing",),
    ("model",),
    ("training",),
    ("pretraining",),
    ("inference",),
    ("evaluation",),
)
FOUNDATION = STAGES[0]
LAZY_ONLY = {("experiment_planning", "preprocessing"), ("experiment_planning", "model")}
LEVEL = {name: level for level, names in enumerate(STAGES) for name in names}


def stage_of(module_parts: list[str]) -> str | None:
    """``["glmil_auto", "training", "trainers"]`` -> ``"training"``; ``None`` for the package root."""
    return module_parts[1] if len(module_parts) > 1 else None


def imports_of(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, imported module, inside a function)`` for every glmil_auto import of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, in_function) for a in child.names if a.name.startswith("glmil_auto"))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and (child.module or "").startswith("glmil_auto"):
                if child.module == "glmil_auto":  # from glmil_auto import training
                    found.extend((child.lineno, f"glmil_auto.{a.name}", in_function) for a in child.names)
                else:
                    found.append((child.lineno, child.module, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["glmil_auto", *path.relative_to(PACKAGE).with_suffix("").parts]
        own = stage_of(parts) if len(parts) > 2 else None  # glmil_auto/paths.py is its own stage "paths"
        if len(parts) == 2:
            own = parts[1] if parts[1] != "__init__" else None
        if own is None:
            continue
        assert own in LEVEL, f"{path}: stage {own!r} is not in STAGES; add it where it belongs"
        for line, module, lazy in imports_of(path):
            target = stage_of(module.split("."))
            if target is None or target == own:
                continue
            assert target in LEVEL, f"{path}:{line}: imports unknown stage {target!r}"
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            if (own, target) in LAZY_ONLY:
                if not lazy:
                    out.append(f"{where} at module level (the planner may only import it inside a function)")
            elif LEVEL[target] > LEVEL[own]:
                out.append(f"{where}, a later stage ({own} -> {target})")
            elif LEVEL[target] == LEVEL[own] and own not in FOUNDATION:
                out.append(f"{where}, a stage at the same level ({own} -> {target})")
    return out


def test_no_import_goes_back_up_the_pipeline():
    assert violations() == []


def test_the_check_sees_module_level_and_function_level_imports(tmp_path, monkeypatch):
    """The walker itself: a planted back-import, at module level and inside a function, is caught."""
    fake = tmp_path / "glmil_auto"
    (fake / "dataset").mkdir(parents=True)
    (fake / "experiment_planning").mkdir()
    (fake / "dataset" / "bad.py").write_text(
        "from glmil_auto.evaluation.metrics import binary_metrics\n"
        "def f():\n    import glmil_auto.training.trainers.trainer\n")
    (fake / "experiment_planning" / "planner.py").write_text(
        "from glmil_auto.model.builder import build_network\n"
        "def g():\n    from glmil_auto.preprocessing.small_foci import case_foci\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = violations()
    assert len(found) == 3, found
    assert "bad.py:1 imports glmil_auto.evaluation.metrics" in found[0]
    assert "bad.py:3 imports glmil_auto.training.trainers.trainer" in found[1]
    assert "planner.py:1 imports glmil_auto.model.builder at module level" in found[2]


@pytest.mark.parametrize("package", ["training", "evaluation"])
def test_training_and_evaluation_are_split_by_role(package):
    """No more than a handful of modules side by side at the top of each (the rest in sub-packages)."""
    top = [p.name for p in (PACKAGE / package).glob("*.py") if p.name != "__init__.py"]
    subpackages = [p.name for p in (PACKAGE / package).iterdir() if (p / "__init__.py").is_file()]
    assert len(top) <= 6, top
    assert len(subpackages) >= 4, subpackages
