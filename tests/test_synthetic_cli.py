"""The command line entry point: defaults, refusal to overwrite, --overwrite."""

from __future__ import annotations

import json

import pytest

from glmil_auto.synthetic.entry_points import generate_synthetic_entry

ARGV = ["-ntr", "3", "-nts", "1", "-nc", "2", "-s", "6", "-np", "1", "--seed", "5", "--no_progress"]


def test_entry_point_writes_into_glmil_raw_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("glmil_raw", str(tmp_path / "raw"))
    generate_synthetic_entry(ARGV)
    folder = tmp_path / "raw" / "Dataset001_SynthBrainMets"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["numTest"] == 1
    assert meta["synthetic"]["n_centres"] == 2 and meta["synthetic"]["external_centre"] == "C2"
    assert (tmp_path / "raw" / "Dataset001_SynthBrainMets_truth.json").is_file()
    stamp = (folder / "clinicalTr.csv").read_bytes()

    with pytest.raises(SystemExit) as err:
        generate_synthetic_entry(ARGV[:-3] + ["--seed", "6", "--no_progress"])
    assert err.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert (folder / "clinicalTr.csv").read_bytes() == stamp  # nothing was touched

    generate_synthetic_entry(ARGV[:-3] + ["--seed", "6", "--no_progress", "--overwrite"])
    assert (folder / "clinicalTr.csv").read_bytes() != stamp


def test_output_option_dataset_id_and_name(tmp_path):
    generate_synthetic_entry(ARGV + ["-o", str(tmp_path), "-d", "7", "--name", "Other", "-nts", "0"])
    folder = tmp_path / "Dataset007_Other"
    assert (folder / "imagesTr").is_dir() and not (folder / "imagesTs").exists()
    assert not (folder / "clinicalTs.csv").exists()
    assert (tmp_path / "Dataset007_Other_truth.json").is_file()


def test_bad_arguments_fail_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        generate_synthetic_entry(["-o", str(tmp_path), "-s", "huge"])
    with pytest.raises(SystemExit) as err:
        generate_synthetic_entry(["-o", str(tmp_path), "-nc", "9", "--no_progress"])
    assert err.value.code == 2 and "n_centres" in capsys.readouterr().err
