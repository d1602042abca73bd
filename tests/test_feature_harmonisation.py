"""Harmonisation of the scanner-dependent lesion features per fold (training/starting_point/feature_harmonisation.py):
hand-made properties of two centres with a known scanner offset on the texture features, then one
tiny trained fold whose harmonisation.json the predictor reads and ``glmil_predict --harmonise``
extends to the held-out centre."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmil_auto.preprocessing.lesion_features.lesion_frame import LESION_FEATURES
from glmil_auto.preprocessing.lesion_features.patients import patient_feature_names, patient_features
from glmil_auto.preprocessing.lesion_features.stored_features import stored_lesion_frame
from glmil_auto.training.starting_point.feature_harmonisation import CentreTransform, FeatureHarmoniser, harmonised_feature_names
from glmil_auto.training.trainers.trainer import GLMILTrainer

IBSI = ["t1c_stat_mean", "t1c_glcm_contrast", "flair_glcm_energy"]
NAMES = [*LESION_FEATURES, *IBSI]
CASE_NAMES = patient_feature_names(NAMES)
TEXTURE = ["enhancement_mean", "histogram_entropy", "t1c_glcm_contrast", "neighbour_contrast"]
SHAPE = ["volume_mm3", "sphericity", "elongation", "csf_distance_mm", "relative_z", "posterior_fossa"]
SHIFT = {"A": 0.0, "B": 1.0, "C": -1.5}  # scanner offsets in units of the feature's SD


def make_case(case: str, centre: str, rng: np.random.Generator, n_lesions: int | None = None) -> dict:
    """Properties as preprocessing writes them (the parts the harmoniser reads): every lesion's
    features (NaN as None) and the case's patient aggregates."""
    n = int(rng.integers(1, 5)) if n_lesions is None else n_lesions
    lesions = []
    for label in range(1, n + 1):
        features = {name: float(rng.normal(10.0, 2.0)) for name in NAMES}
        for name in harmonised_feature_names(NAMES):
            features[name] += 2.0 * SHIFT[centre]  # one SD per unit of SHIFT
        features["volume_mm3"] = float(rng.uniform(20, 2000))
        features["posterior_fossa"] = float(rng.integers(0, 2))
        features["flair_glcm_energy"] = None  # undefined (no FLAIR texture): stays undefined
        lesions.append({"label": label, "kept": label <= 3, "instance_index": label - 1 if label <= 3 else None,
                        "centroid_world_mm": [float(label), 2.0, 3.0], "volume_mm3": features["volume_mm3"],
                        "features": features})
    properties = {"case_id": case, "lesions": lesions, "n_lesions": n, "n_instances": min(n, 3)}
    properties["case_features"] = stored_case_features(properties)
    return properties


def stored_case_features(properties: dict) -> dict:
    frame = stored_lesion_frame([properties], [properties["case_id"]], NAMES)
    row = patient_features(frame, [properties["case_id"]], NAMES).iloc[0]
    return {n: (None if not np.isfinite(row[n]) else float(row[n])) for n in CASE_NAMES}


def cohort(seed: int = 0, centres: dict[str, int] | None = None) -> tuple[list[dict], list[str]]:
    rng = np.random.default_rng(seed)
    properties, labels = [], []
    for centre, n in (centres or {"A": 40, "B": 30}).items():
        for i in range(n):
            properties.append(make_case(f"{centre}{i:03d}", centre, rng))
            labels.append(centre)
    return properties, labels


def lesion_values(properties: list[dict], name: str) -> np.ndarray:
    return np.array([np.nan if l["features"][name] is None else l["features"][name]
                     for p in properties for l in p["lesions"]], dtype=float)


def test_the_harmonised_features_are_the_intensity_and_texture_ones():
    chosen = harmonised_feature_names(NAMES)
    for name in ("enhancement_mean", "enhancement_cv", "relative_intensity_mean", "relative_cv", "interior_std",
                 "histogram_entropy", "gradient_mean", "neighbour_contrast", "core_rim_difference", "flair_mean",
                 "oedema_flair_0_5", "oedema_flair_5_10", *IBSI):
        assert name in chosen, name
    for name in ("volume_mm3", "log_volume", "sphericity", "necrotic_fraction", "oedema_volume_0_5_mm3",
                 "oedema_fraction_0_5", "csf_distance_mm", "csf_adjacent", "depth_mm", "relative_z", "relative_y",
                 "laterality", "posterior_fossa", "mm_below_vertex"):
        assert name not in chosen, name
    assert chosen == [n for n in NAMES if n in chosen]  # the plans' order


@pytest.mark.parametrize("method", ["combat", "centre"])
def test_training_centres_are_aligned_and_shape_features_untouched(method):
    properties, centres = cohort()
    harmoniser = FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES, method=method)
    assert harmoniser.method == method and harmoniser.training_centres == ["A", "B"]
    assert harmoniser.n_cases == {"A": 40, "B": 30}
    assert harmoniser.feature_names == harmonised_feature_names(NAMES)
    before = [json.dumps(p, sort_keys=True) for p in properties]
    out = [harmoniser.transform(p, c) for p, c in zip(properties, centres)]
    assert [json.dumps(p, sort_keys=True) for p in properties] == before  # the inputs are not written
    a = [p for p, c in zip(out, centres) if c == "A"]
    b = [p for p, c in zip(out, centres) if c == "B"]
    gaps = []
    for name in harmonised_feature_names(NAMES):
        if name == "flair_glcm_energy":  # undefined everywhere
            continue
        raw_gap = np.mean(lesion_values(properties[40:], name)) - np.mean(lesion_values(properties[:40], name))
        assert raw_gap == pytest.approx(2.0, abs=0.8)  # one SD (2.0) of scanner offset, plus sampling noise
        gaps.append(np.mean(lesion_values(b, name)) - np.mean(lesion_values(a, name)))
    if method == "centre":  # per-centre standardisation equalises the centre means exactly
        np.testing.assert_allclose(gaps, 0.0, atol=1e-9)
    else:  # ComBat's empirical Bayes removes the offset the features share; what is left is sampling noise
        assert np.abs(gaps).max() < 0.25 * 2.0 and abs(np.mean(gaps)) < 0.05 * 2.0
    for name in SHAPE:
        np.testing.assert_array_equal(lesion_values(out, name), lesion_values(properties, name))
    assert all(l["features"]["flair_glcm_energy"] is None for p in out for l in p["lesions"])  # NaN stays NaN
    for original, harmonised in zip(properties, out):  # everything but the features is the same
        assert {k: v for k, v in original.items() if k not in ("lesions", "case_features")} == \
               {k: v for k, v in harmonised.items() if k not in ("lesions", "case_features")}
        for l0, l1 in zip(original["lesions"], harmonised["lesions"]):
            assert {k: v for k, v in l0.items() if k != "features"} == {k: v for k, v in l1.items() if k != "features"}


def test_case_features_are_the_patient_aggregates_of_the_transformed_lesions():
    properties, centres = cohort()
    harmoniser = FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES)
    for props, centre in zip(properties[::7], centres[::7]):
        out = harmoniser.transform(props, centre)
        expected = stored_case_features(out)
        assert out["case_features"].keys() == expected.keys()
        for name, value in expected.items():
            assert out["case_features"][name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
        # aggregates of features that are not harmonised do not move
        for name in ("n_lesions", "total_volume_mm3", "max_volume_mm3", "min_csf_distance_mm", "sum_posterior_fossa"):
            assert out["case_features"][name] == pytest.approx(props["case_features"][name], rel=1e-12)
        if centre == "B":
            assert out["case_features"]["max_enhancement_mean"] < props["case_features"]["max_enhancement_mean"]


def test_an_unseen_centre_passes_unchanged_and_fit_new_centre_aligns_it(caplog):
    properties, centres = cohort()
    harmoniser = FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES)
    new, _ = cohort(seed=1, centres={"C": 25})
    with caplog.at_level(logging.WARNING, logger="glmil_auto.training.starting_point.feature_harmonisation"):
        unchanged = [harmoniser.transform(p, "C") for p in new]
    assert all(u is p for u, p in zip(unchanged, new))
    assert sum("centre 'C' pass unharmonised" in r.getMessage() for r in caplog.records) == 1  # once per centre
    assert harmoniser.transform(new[0], None) is new[0]  # no centre: unchanged too
    extended = harmoniser.fit_new_centre(new, "C")
    assert extended.centres == ["A", "B", "C"] and extended.added_centres == ["C"]
    assert extended.training_centres == ["A", "B"] and not harmoniser.knows("C")  # the original is untouched
    pooled = [extended.transform(p, c) for p, c in zip(properties, centres)]
    aligned = [extended.transform(p, "C") for p in new]
    gaps = []
    for name in TEXTURE:
        raw_gap = np.mean(lesion_values(new, name)) - np.mean(lesion_values(pooled, name))
        assert raw_gap < -2.0  # centre C reads 1.5 SD low (3.0), the pool 0.4 SD high
        gaps.append(np.mean(lesion_values(aligned, name)) - np.mean(lesion_values(pooled, name)))
    assert np.abs(gaps).max() < 0.25 * 3.0, gaps
    # the training centres keep their parameters
    for p, c in zip(properties[:5], centres[:5]):
        assert extended.transform(p, c) == harmoniser.transform(p, c)
    with pytest.raises(ValueError, match="already known"):
        extended.fit_new_centre(new, "C")


def test_to_dict_round_trip_and_pickling():
    properties, centres = cohort()
    new, _ = cohort(seed=2, centres={"C": 10})
    harmoniser = FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES).fit_new_centre(new, "C")
    data = harmoniser.to_dict()
    text = json.dumps(data, allow_nan=False)  # strict JSON
    again = FeatureHarmoniser.from_dict(json.loads(text))
    assert again.to_dict() == data
    for p, c in [*zip(properties[::9], centres[::9]), (new[0], "C")]:
        assert again.transform(p, c) == harmoniser.transform(p, c)
    harmoniser.transform(properties[0], "A")
    assert harmoniser._cache  # the loader asks repeatedly: transformed cases are cached, and travel to workers
    restored = pickle.loads(pickle.dumps(harmoniser))
    assert restored._cache.keys() == harmoniser._cache.keys()
    assert restored.transform(properties[0], "A") == harmoniser.transform(properties[0], "A")
    transform = pickle.loads(pickle.dumps(CentreTransform(harmoniser, {"A000": "A", "B000": "B"})))
    assert transform("A000", properties[0]) == harmoniser.transform(properties[0], "A")
    assert transform("unknown_case", properties[0]) is properties[0]


def test_the_cache_returns_fresh_copies_and_is_used(monkeypatch):
    properties, centres = cohort()
    harmoniser = FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES)
    calls = []
    original = FeatureHarmoniser._harmonise
    monkeypatch.setattr(FeatureHarmoniser, "_harmonise", lambda self, *a: calls.append(a[2]) or original(self, *a))
    first = harmoniser.transform(properties[41], "B")
    first["lesions"][0]["features"]["enhancement_mean"] = -1e9  # a caller writing into its copy
    first["case_features"]["n_lesions"] = -1
    second = harmoniser.transform(properties[41], "B")
    assert calls == ["B001"]
    assert second["lesions"][0]["features"]["enhancement_mean"] != -1e9 and second["case_features"]["n_lesions"] > 0


def test_identity_when_there_is_nothing_to_harmonise_between():
    properties, centres = cohort(centres={"A": 10})
    one = FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES)
    assert one.is_identity and "1 centre(s) (A)" in one.reason
    assert one.transform(properties[0], "A") is properties[0]
    off = FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES, method=None)
    assert off.is_identity and "switched off" in off.reason
    unknown = FeatureHarmoniser.fit(properties, [None] * len(properties), NAMES, CASE_NAMES)
    assert unknown.is_identity and "0 centre(s)" in unknown.reason
    no_features = FeatureHarmoniser.fit(properties, ["A", "B"] * 5, [], [])
    assert no_features.is_identity and "no lesion features" in no_features.reason
    assert FeatureHarmoniser.from_dict(one.to_dict()).reason == one.reason
    assert one.fit_new_centre(properties, "C").is_identity  # the identity stays the identity
    with pytest.raises(ValueError, match="unknown harmonisation method"):
        FeatureHarmoniser.fit(properties, centres, NAMES, CASE_NAMES, method="zscore")


def test_cases_without_lesions_and_centres_without_lesions():
    rng = np.random.default_rng(3)
    properties, centres = cohort()
    empty = {"case_id": "E", "lesions": [], "n_lesions": 0, "n_instances": 0,
             "case_features": stored_case_features({"case_id": "E", "lesions": []})}
    harmoniser = FeatureHarmoniser.fit([*properties, empty], [*centres, "A"], NAMES, CASE_NAMES)
    assert harmoniser.transform(empty, "A") is empty
    assert harmoniser.n_cases["A"] == 41
    lesion_free = FeatureHarmoniser.fit([make_case("x", "A", rng), empty], ["A", "B"], NAMES, CASE_NAMES)
    assert lesion_free.is_identity and "only 1 training centre(s) have lesions" in lesion_free.reason


# ----------------------------------------------------------------------------- a trained fold


class FeatureHarmonisationTrainer(GLMILTrainer):
    """One short epoch: the test needs a trained fold with its harmonisation, not a good model."""

    num_epochs = 1
    iterations_per_epoch = 1
    warmup_epochs = 0
    num_augmentation_workers = 0
    explain_validation = False
    measure_memory = False


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from glmil_auto.experiment_planning.device_profile import DeviceProfile
    from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
    from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
    from glmil_auto.synthetic import generate_synthetic_dataset
    from glmil_auto.training.run_training import run_training

    root = tmp_path_factory.mktemp("harmonisation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        raw = generate_synthetic_dataset(root / "raw", n_train=16, n_test=4, n_centres=3, size=4.0, seed=8,
                                         num_processes=1, progress=False)
        plan_and_preprocess(1, num_processes=1, device=DeviceProfile("cpu", "cpu", 0.5, 2), progress=False)
        trainer = run_training(1, 0, "FeatureHarmonisationTrainer")
        model = root / "results" / "Dataset001_SynthBrainMets" / "FeatureHarmonisationTrainer__plans"
        yield {"root": root, "raw": Path(raw), "model": model, "trainer": trainer}


def test_a_trained_fold_writes_its_harmonisation_and_glmil_predict_harmonise_uses_it(trained, tmp_path, capsys,
                                                                                    monkeypatch):
    from glmil_auto.inference.entry_points import predict_entry
    from glmil_auto.inference.model_folder import ModelFolderError
    from glmil_auto.inference.predictor import GLMILPredictor
    from glmil_auto.preprocessing.storage import load_properties
    from glmil_auto.training.trainers.checkpointing import load_checkpoint, save_checkpoint
    from glmil_auto.utilities.content_hash import json_sha256

    trainer, model, raw = trained["trainer"], trained["model"], trained["raw"]
    fold = model / "fold_0"
    record = json.loads((fold / "harmonisation.json").read_text())
    harmoniser = FeatureHarmoniser.from_dict(record)
    centres = sorted({str(trainer.table.loc[c, trainer.spec.group_column]) for c in trainer.train_cases})
    assert len(centres) == 2 and sorted(harmoniser.training_centres) == centres and harmoniser.method == "combat"
    assert harmoniser.feature_names and all(n in harmonised_feature_names(harmoniser.lesion_feature_names)
                                            for n in harmoniser.feature_names)
    debug = json.loads((fold / "debug.json").read_text())
    assert debug["harmonisation"]["method"] == "combat" and debug["harmonisation"]["training_centres"] == \
        harmoniser.training_centres
    metadata = load_checkpoint(fold / "checkpoint_final.pt")["metadata"]
    assert metadata["harmonisation_sha256"] == json_sha256(record)

    # the loader gives the network the harmonised features; recomputing aggregates of unharmonised
    # stored features reproduces preprocessing's own
    case = trainer.val_cases[0]
    centre = trainer.case_centres[case]
    stored = load_properties(trainer.preprocessed / "plans" / "Tr", case)
    harmonised = harmoniser.transform(stored, centre)
    loader = trainer._loader([case], 1, infinite=False, seed=0)
    batch = loader.load_batch([0])
    kept = sorted((l for l in harmonised["lesions"] if l["kept"]), key=lambda l: l["instance_index"])
    expected = np.array([[np.nan if l["features"][n] is None else l["features"][n] for n in loader.lesion_feature_names]
                         for l in kept], dtype=np.float32)
    np.testing.assert_array_equal(batch["instance_features"][0, : len(kept)], expected)
    assert not np.allclose(batch["instance_features"][0, : len(kept)],
                           [[np.nan if l["features"][n] is None else l["features"][n] for n in loader.lesion_feature_names]
                            for l in sorted((l for l in stored["lesions"] if l["kept"]),
                                            key=lambda l: l["instance_index"])], equal_nan=True)
    def base(name: str) -> str:  # the lesion feature a patient aggregate is made of
        prefix, _, rest = name.partition("_")
        return rest if prefix in ("max", "mean", "min", "sum", "vw") else name

    untouched = [n for n in harmoniser.case_feature_names if base(n) not in harmoniser.feature_names]
    assert len(untouched) > 10
    for name in untouched:
        assert harmonised["case_features"][name] == pytest.approx(stored["case_features"][name], rel=1e-5, abs=1e-6)

    # glmil_predict --harmonise: the held-out centre is fitted on its own cases of the run
    out = tmp_path / "harmonised"
    args = ["-i", str(raw / "imagesTs"), "-m", str(raw / "labelsTs"), "-d", "1", "-tr", "FeatureHarmonisationTrainer",
            "-c", str(raw / "clinicalTs.csv"), "--disable_tta", "--no_progress", "-device", "cpu"]
    assert predict_entry([*args, "-o", str(out), "--harmonise"]) == 0, capsys.readouterr().err
    settings = json.loads((out / "prediction_settings.json").read_text())
    test_cases = sorted(pd.read_csv(raw / "clinicalTs.csv", dtype=str)["case_id"])
    external = sorted(set(pd.read_csv(raw / "clinicalTs.csv", dtype=str)["center"]))
    assert len(external) == 1 and external[0] not in centres
    assert settings["harmonisation"]["harmonise"] is True
    assert settings["harmonisation"]["new_centres"] == {external[0]: test_cases}
    assert settings["harmonisation"]["folds"]["0"]["added_centres"] == external
    assert settings["produced_by"]["harmonise"] is True and settings["produced_by"]["harmonisation"] == {"0": "combat"}
    content = json.loads((out / f"{test_cases[0]}.json").read_text())
    assert content["harmonisation"]["centre"] == external[0]
    assert content["harmonisation"]["folds"]["0"].startswith("harmonised as a new centre")

    plain = tmp_path / "plain"
    assert predict_entry([*args, "-o", str(plain)]) == 0, capsys.readouterr().err
    plain_settings = json.loads((plain / "prediction_settings.json").read_text())
    assert plain_settings["harmonisation"]["harmonise"] is False and plain_settings["harmonisation"]["new_centres"] == {}
    assert plain_settings["produced_by"]["fingerprint"] != settings["produced_by"]["fingerprint"]
    assert json.loads((plain / f"{test_cases[0]}.json").read_text())["harmonisation"]["folds"]["0"].startswith(
        "unchanged: centre not seen")
    harmonised_frame = pd.read_csv(out / "predictions.csv")
    plain_frame = pd.read_csv(plain / "predictions.csv")
    assert list(harmonised_frame["case_id"]) == list(plain_frame["case_id"]) == test_cases
    assert not np.allclose(harmonised_frame["os_risk"], plain_frame["os_risk"], rtol=0, atol=1e-9)

    # continuing a --harmonise run reuses every case: the first pass, here in preprocessing workers,
    # gives the new centre the same fit
    calls = []
    original = GLMILPredictor.predict_case
    monkeypatch.setattr(GLMILPredictor, "predict_case", lambda self, c, *a, **k: calls.append(c.case_id)
                        or original(self, c, *a, **k))
    assert predict_entry([*args, "-o", str(out), "--harmonise", "--continue_prediction", "-npp", "2"]) == 0
    assert calls == []
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), harmonised_frame)
    (out / f"{test_cases[1]}.json").unlink()  # as if interrupted: only that case is predicted again, the same
    assert predict_entry([*args, "-o", str(out), "--harmonise", "--continue_prediction"]) == 0
    assert calls == [test_cases[1]]
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), harmonised_frame)

    # a fold trained on harmonised features needs its harmonisation.json; a fold without a record
    # (trained before harmonisation) predicts unharmonised
    copy = tmp_path / "copied_model"
    shutil.copytree(model, copy)
    (copy / "fold_0" / "harmonisation.json").unlink()
    with pytest.raises(ModelFolderError, match="harmonisation.json is missing"):
        GLMILPredictor(copy, device="cpu")
    checkpoint = load_checkpoint(copy / "fold_0" / "checkpoint_final.pt")
    del checkpoint["metadata"]["harmonisation_sha256"]
    save_checkpoint(copy / "fold_0" / "checkpoint_final.pt", checkpoint)
    old = GLMILPredictor(copy, device="cpu")
    assert old.harmonisers["0"].is_identity and "no harmonisation.json" in old.harmonisers["0"].reason
