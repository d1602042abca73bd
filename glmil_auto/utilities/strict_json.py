"""JSON reading that refuses a key given twice in one object (the json module keeps the last one
silently, so a dataset.json with two "endpoints" would lose one without a word)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DuplicateKeyError(ValueError):
    """A JSON object holds the same key more than once."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"key {key!r} appears more than once in one object")
        seen[key] = value
    return seen


def loads_strict(text: str) -> Any:
    """``json.loads`` raising :class:`DuplicateKeyError` on a repeated key (a ValueError, as
    ``json.JSONDecodeError`` is)."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def load_strict(path: str | Path) -> Any:
    return loads_strict(Path(path).read_text(encoding="utf-8"))
