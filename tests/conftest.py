"""Shared fixtures. Tests build their own tiny data; nothing downloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from handmade_dataset import build_handmade_dataset


@pytest.fixture(scope="session")
def _handmade_template(tmp_path_factory) -> Path:
    return build_handmade_dataset(tmp_path_factory.mktemp("handmade"))


@pytest.fixture
def handmade_dataset(_handmade_template, tmp_path) -> Path:
    """A fresh, writable copy of the hand-made dataset (tests may break it)."""
    return Path(shutil.copytree(_handmade_template, tmp_path / _handmade_template.name))
