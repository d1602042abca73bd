"""Paths from environment variables and dataset lookup by id or name."""

from __future__ import annotations

import pytest

from glmil_auto import paths


def test_defaults_under_working_directory(tmp_path, monkeypatch):
    for variable in ("glmil_raw", "glmil_preprocessed", "glmil_results"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.raw_folder() == tmp_path / "glmil_data" / "raw"
    assert paths.preprocessed_folder() == tmp_path / "glmil_data" / "preprocessed"
    assert paths.results_folder() == tmp_path / "glmil_data" / "results"


def test_environment_variables_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("glmil_raw", str(tmp_path / "r"))
    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "p"))
    monkeypatch.setenv("glmil_results", str(tmp_path / "m"))
    assert paths.raw_folder() == tmp_path / "r"
    assert paths.preprocessed_folder() == tmp_path / "p"
    assert paths.results_folder() == tmp_path / "m"


@pytest.fixture
def three_roots(tmp_path, monkeypatch):
    roots = {v: tmp_path / v for v in ("glmil_raw", "glmil_preprocessed", "glmil_results")}
    for variable, root in roots.items():
        root.mkdir()
        monkeypatch.setenv(variable, str(root))
    (roots["glmil_raw"] / "Dataset917_HoldoutMets").mkdir()
    (roots["glmil_raw"] / "Dataset001_SynthBrainMets").mkdir()
    (roots["glmil_raw"] / "Dataset001_SynthBrainMets_truth.json").write_text("{}")  # a file, not a dataset
    (roots["glmil_raw"] / "not_a_dataset").mkdir()
    (roots["glmil_results"] / "Dataset042_OnlyTrained").mkdir()
    return roots


@pytest.mark.parametrize(
    "identifier, expected",
    [
        (917, "Dataset917_HoldoutMets"),
        ("917", "Dataset917_HoldoutMets"),
        ("1", "Dataset001_SynthBrainMets"),
        ("001", "Dataset001_SynthBrainMets"),
        ("Dataset917_HoldoutMets", "Dataset917_HoldoutMets"),
        ("HoldoutMets", "Dataset917_HoldoutMets"),
        (42, "Dataset042_OnlyTrained"),
    ],
)
def test_lookup_by_id_or_name(three_roots, identifier, expected):
    assert paths.resolve_dataset_name(identifier) == expected


def test_raw_folder_lookup_only_searches_raw(three_roots):
    assert paths.raw_dataset_folder(917) == three_roots["glmil_raw"] / "Dataset917_HoldoutMets"
    with pytest.raises(paths.DatasetNotFoundError, match="No dataset matches '42'"):
        paths.raw_dataset_folder(42)


def test_unknown_dataset_lists_what_exists(three_roots):
    with pytest.raises(paths.DatasetNotFoundError) as info:
        paths.resolve_dataset_name(5)
    message = str(info.value)
    assert "No dataset matches '5'" in message
    assert "Dataset001_SynthBrainMets, Dataset042_OnlyTrained, Dataset917_HoldoutMets" in message
    assert "not_a_dataset" not in message and "truth" not in message


def test_ambiguous_id(three_roots):
    (three_roots["glmil_preprocessed"] / "Dataset917_OtherMets").mkdir()
    with pytest.raises(paths.DatasetNotFoundError, match="ambiguous.*Dataset917_HoldoutMets, Dataset917_OtherMets"):
        paths.resolve_dataset_name(917)
    # the full name still works
    assert paths.resolve_dataset_name("Dataset917_OtherMets") == "Dataset917_OtherMets"


def test_dataset_folder_name():
    assert paths.dataset_folder_name(7, "Mets") == "Dataset007_Mets"
    with pytest.raises(ValueError, match="not a valid dataset folder name"):
        paths.dataset_folder_name(1000, "Mets")
    with pytest.raises(ValueError):
        paths.dataset_folder_name(1, "bad name")
