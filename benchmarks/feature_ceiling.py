"""How much of the synthetic cohort's signal can lesion measurements recover? A study of what the
images allow, for the accuracy goals of documentation/accuracy.md.

    python benchmarks/feature_ceiling.py [--dataset 10] [--np 2] [--raw-extraction]

For a synthetic dataset with its truth file (``glmil_raw/DatasetXXX_NAME_truth.json``), the same
lesion-level noisy-OR that the radiomics peer uses (:class:`NoisyOrLesionModel`, penalty by inner
cross-validation, the radioresistant-primary indicator as the patient covariate) is fitted on the
training cases with different sources of each lesion variable that the true local-failure model
uses (size and dose step, necrosis, enhancement heterogeneity):

- every variable from the truth file: what 200 cases and their drawn outcomes allow at best;
- size and necrosis from the truth file, heterogeneity measured in the image (each texture
  statistic of the peer), and the reverse;
- every variable measured in the image.

Leptomeningeal and distant failure get the same treatment with a logistic regression: the truth
file's CSF contact, ventricle contact and posterior-fossa flags (or micro-lesion count) against
the peer's measured equivalents. It prints the expected AUC at the external centre (every pair
weighted by the true probabilities, no label noise) and the ceiling.

The measured features are the ones preprocessing stored (``glmil_plan_and_preprocess`` first; the
network's starting point reads the same), matched to the truth's lesions through the dataset's
lesion table (each truth lesion's centroid), or with ``--raw-extraction`` measured again from the
raw images. Where the dataset has a lesion table, two more local-failure rows fit the lesion
model on the lesions' own outcomes (a lesion-level logistic regression, combined by the noisy-OR
at the case level): what lesion labels add to the same features.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd


def truth_frames(truth: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per case, one row per lesion) of the truth file's variables."""
    from glmil_auto.synthetic.outcomes import RADIORESISTANT, srs_dose_gy

    cases, lesions = [], []
    for case in truth["cases"].values():
        primary = case["clinical"]["primary"]
        row = {"case_id": case["case_id"], "split": case["split"], "n_lesions": case["n_lesions"],
               "log_count": math.log(max(case["n_lesions"], 1)), "log1p_micro": math.log1p(case["n_micro_lesions"]),
               "log1p_volume_ml": math.log1p(case["total_lesion_volume_mm3"] / 1000.0),
               "radioresistant": float(primary in RADIORESISTANT), "breast": float(primary == "breast"),
               "melanoma": float(primary == "melanoma"), "prior_wbrt": float(case["clinical"]["prior_wbrt"]),
               "any_csf": float(any(les["csf_contact"] for les in case["lesions"])),
               "any_ventricle": float(any(les["ventricle_contact"] for les in case["lesions"])),
               "any_posterior_fossa": float(any(les["posterior_fossa"] for les in case["lesions"]))}
        for name, p in case["probabilities"].items():
            row[f"p_{name}"], row[f"y_{name}"] = p, case["outcomes"][name]
        cases.append(row)
        for lesion in case["lesions"]:
            dose = srs_dose_gy(lesion["diameter_mm"])
            lesions.append({"case_id": case["case_id"], "lesion_label": int(lesion["lesion_index"]),
                            "true_log_diameter": math.log(lesion["diameter_mm"] / 8.0),
                            "true_dose_18": float(dose == 18.0), "true_dose_15": float(dose == 15.0),
                            "true_necrosis": float(lesion["necrosis"]), "true_heterogeneity": lesion["heterogeneity"]})
    return pd.DataFrame(cases).set_index("case_id"), pd.DataFrame(lesions)


def with_measured_size(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured size as the truth's size variables: log diameter over 8 mm and the RTOG dose
    steps from the equivalent diameter."""
    from glmil_auto.synthetic.outcomes import srs_dose_gy

    diameter = frame["equivalent_diameter_mm"].clip(lower=0.5)
    dose = diameter.map(srs_dose_gy)
    frame["measured_log_diameter"] = np.log(diameter / 8.0)
    frame["measured_dose_18"] = (dose == 18.0).astype(float)
    frame["measured_dose_15"] = (dose == 15.0).astype(float)
    return frame


def measured_lesions(raw_folder: Path, num_processes: int) -> pd.DataFrame:
    """The radiomics peer's lesion features of both splits, plus the measured size as the truth's
    size variables (log diameter over 8 mm and the RTOG dose steps from the equivalent diameter)."""
    from glmil_auto.evaluation.radiomics_peer import extract_dataset_features

    frame = pd.concat([extract_dataset_features(raw_folder, split, num_processes=num_processes, progress=False)
                       for split in ("Tr", "Ts")], ignore_index=True)
    frame["lesion_label"] = frame["lesion_label"].astype(int)
    return with_measured_size(frame)


def stored_lesions(raw_folder: Path) -> pd.DataFrame:
    """The lesion features preprocessing stored, with each lesion's truth label found through the
    dataset's lesion table (the truth's lesion centroid in world mm, nearest stored centroid)."""
    from scipy.spatial import cKDTree

    from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, load_plans
    from glmil_auto.paths import preprocessed_folder
    from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names
    from glmil_auto.preprocessing.lesion_features.stored_features import read_stored_lesion_features

    pre = preprocessed_folder() / raw_folder.name
    plans = load_plans(pre / f"{DEFAULT_PLANS_NAME}.json")
    names = lesion_feature_names(plans["preprocessing"].get("lesion_features"))
    frames = []
    for split in ("Tr", "Ts"):
        table = raw_folder / f"lesions{split}.csv"
        if not table.is_file():
            raise SystemExit(f"{table} not found: the stored features are matched to the truth through it "
                             "(or use --raw-extraction)")
        points = pd.read_csv(table, dtype={"case_id": str})
        cases = sorted(points["case_id"].unique())
        folder = pre / DEFAULT_PLANS_NAME / split
        cases = [c for c in cases if (folder / f"{c}.json").is_file()]
        stored = read_stored_lesion_features(folder, cases, names)
        for case, rows in points.groupby("case_id"):
            mine = stored[stored["case_id"] == case]
            if not len(mine):
                continue
            tree = cKDTree(mine[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float))
            distance, index = tree.query(rows[["x_mm", "y_mm", "z_mm"]].to_numpy(float))
            matched = mine.iloc[index].copy()
            matched["lesion_label"] = rows["lesion_label"].to_numpy(int)
            matched["lesion_outcome"] = rows["local_failure"].to_numpy(float) if "local_failure" in rows else np.nan
            frames.append(matched[distance <= 1.0])
    frame = pd.concat(frames, ignore_index=True)
    return with_measured_size(frame)


def lesion_label_auc(lesions: pd.DataFrame, cases: pd.DataFrame, features: list[str]) -> float:
    """A logistic regression on the lesions' own outcomes (training lesions with a known outcome),
    its lesion probabilities combined by the noisy-OR over each test case's lesions."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from glmil_auto.evaluation.benchmarking.expected_auc import expected_auc

    train_cases = set(cases.index[cases["split"] == "Tr"])
    test = cases[cases["split"] == "Ts"]
    train = lesions[lesions["case_id"].isin(train_cases) & lesions["lesion_outcome"].notna()]
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=5, max_iter=2000))
    model.fit(train[features].to_numpy(float), train["lesion_outcome"].to_numpy(int))
    test_lesions = lesions[lesions["case_id"].isin(set(test.index))]
    p = model.predict_proba(test_lesions[features].to_numpy(float))[:, 1]
    survive = pd.Series(np.log1p(-np.clip(p, 0, 1 - 1e-12)), index=test_lesions["case_id"].to_numpy())
    per_case = survive.groupby(level=0).sum().reindex(test.index).fillna(0.0)
    return expected_auc(1.0 - np.exp(per_case.to_numpy()), test["p_local_failure"].to_numpy())


def noisy_or_auc(lesions: pd.DataFrame, cases: pd.DataFrame, features: list[str], seed: int) -> float:
    from glmil_auto.evaluation.benchmarking.expected_auc import expected_auc
    from glmil_auto.evaluation.radiomics_peer import NoisyOrLesionModel

    train = cases[(cases["split"] == "Tr") & cases["y_local_failure"].notna()]
    test = cases[cases["split"] == "Ts"]
    model = NoisyOrLesionModel(seed=seed, feature_columns=features)
    model.fit(lesions, list(train.index), train["y_local_failure"].to_numpy(float), train[["radioresistant"]])
    scores = model.predict_proba(lesions, list(test.index), test[["radioresistant"]])
    return expected_auc(np.asarray(scores), test["p_local_failure"].to_numpy())


def logistic_auc(cases: pd.DataFrame, endpoint: str, features: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from glmil_auto.evaluation.benchmarking.expected_auc import expected_auc

    train = cases[(cases["split"] == "Tr") & cases[f"y_{endpoint}"].notna()]
    test = cases[cases["split"] == "Ts"]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(train[features].to_numpy(float), train[f"y_{endpoint}"].to_numpy(int))
    return expected_auc(model.decision_function(test[features].to_numpy(float)), test[f"p_{endpoint}"].to_numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="10")
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-extraction", action="store_true",
                        help="measure the lesion features from the raw images instead of reading the stored ones")
    args = parser.parse_args()

    from glmil_auto.evaluation.benchmarking.expected_auc import expected_auc
    from glmil_auto.paths import raw_dataset_folder

    started = time.perf_counter()
    raw = Path(raw_dataset_folder(args.dataset))
    truth_file = raw.parent / f"{raw.name}_truth.json"
    if not truth_file.is_file():
        raise SystemExit(f"{truth_file} not found: this study needs a synthetic dataset's truth file")
    cases, true_lesions = truth_frames(json.loads(truth_file.read_text()))
    measured = measured_lesions(raw, args.np) if args.raw_extraction else stored_lesions(raw)
    lesions = true_lesions.merge(measured, on=["case_id", "lesion_label"], how="inner")
    if len(lesions) != len(true_lesions):
        raise SystemExit(f"{len(true_lesions) - len(lesions)} truth lesions have no measured lesion (labels differ)")
    lesions = lesions.fillna(lesions.median(numeric_only=True))
    test = cases[cases["split"] == "Ts"]

    true_size = ["true_log_diameter", "true_dose_18", "true_dose_15"]
    measured_size = ["measured_log_diameter", "measured_dose_18", "measured_dose_15"]
    measured_necrosis = ["core_rim_difference", "dark_fraction"]
    texture = ["relative_cv", "enhancement_cv", "neighbour_contrast", "interior_std", "histogram_entropy"]
    rows = [("local_failure", "ceiling (true probabilities)",
             expected_auc(test["p_local_failure"].to_numpy(), test["p_local_failure"].to_numpy())),
            ("local_failure", "noisy-OR, every variable true",
             noisy_or_auc(lesions, cases, true_size + ["true_necrosis", "true_heterogeneity"], args.seed)),
            ("local_failure", "noisy-OR, true size + necrosis, no heterogeneity",
             noisy_or_auc(lesions, cases, true_size + ["true_necrosis"], args.seed)),
            ("local_failure", "noisy-OR, measured size + necrosis, true heterogeneity",
             noisy_or_auc(lesions, cases, measured_size + measured_necrosis + ["true_heterogeneity"], args.seed))]
    for column in texture:
        rows.append(("local_failure", f"noisy-OR, true size + necrosis, heterogeneity measured as {column}",
                     noisy_or_auc(lesions, cases, true_size + ["true_necrosis", column], args.seed)))
    rows.append(("local_failure", "noisy-OR, every variable measured (relative_cv)",
                 noisy_or_auc(lesions, cases, measured_size + measured_necrosis + ["relative_cv"], args.seed)))
    ibsi = [c for c in lesions.columns if c.startswith("t1c_")]
    if ibsi:
        rows.append(("local_failure", "noisy-OR, measured size + necrosis + relative_cv + the T1c IBSI families",
                     noisy_or_auc(lesions, cases, measured_size + measured_necrosis + ["relative_cv"] + ibsi, args.seed)))
    if "lesion_outcome" in lesions and lesions["lesion_outcome"].notna().any():
        rows.append(("local_failure", "lesion labels: lesion logistic, every variable true, noisy-OR per case",
                     lesion_label_auc(lesions, cases, true_size + ["true_necrosis", "true_heterogeneity"])))
        rows.append(("local_failure", "lesion labels: lesion logistic, measured size + necrosis + relative_cv",
                     lesion_label_auc(lesions, cases, measured_size + measured_necrosis + ["relative_cv"])))
        if ibsi:
            rows.append(("local_failure", "lesion labels: the same + the T1c IBSI families",
                         lesion_label_auc(lesions, cases, measured_size + measured_necrosis + ["relative_cv"] + ibsi)))

    per_case = lesions.groupby("case_id").agg(min_csf_distance=("csf_distance_mm", "min"),
                                              any_csf_adjacent=("csf_adjacent", "max"),
                                              min_ventricle_distance=("ventricle_distance_mm", "min"),
                                              any_measured_posterior_fossa=("posterior_fossa", "max"))
    cases = cases.join(per_case)
    cases = cases.fillna(cases.median(numeric_only=True))
    test = cases[cases["split"] == "Ts"]
    clinical_lmd = ["breast", "log_count", "log1p_volume_ml"]
    for endpoint, label, features in (
        ("leptomeningeal_failure", "logistic, clinical + count + volume", clinical_lmd),
        ("leptomeningeal_failure", "logistic, + true CSF / ventricle contact and posterior fossa",
         clinical_lmd + ["any_csf", "any_ventricle", "any_posterior_fossa"]),
        ("leptomeningeal_failure", "logistic, + measured CSF / ventricle distance and posterior fossa",
         clinical_lmd + ["min_csf_distance", "any_csf_adjacent", "min_ventricle_distance", "any_measured_posterior_fossa"]),
        ("distant_failure", "logistic, clinical + count + volume",
         ["log_count", "melanoma", "breast", "prior_wbrt", "log1p_volume_ml"]),
        ("distant_failure", "logistic, + true micro-lesion count",
         ["log_count", "melanoma", "breast", "prior_wbrt", "log1p_volume_ml", "log1p_micro"]),
    ):
        if label.startswith("logistic, clinical"):
            rows.append((endpoint, "ceiling (true probabilities)",
                         expected_auc(test[f"p_{endpoint}"].to_numpy(), test[f"p_{endpoint}"].to_numpy())))
        rows.append((endpoint, label, logistic_auc(cases, endpoint, features)))

    print(f"\nDataset {raw.name}: trained on {int((cases['split'] == 'Tr').sum())} cases, "
          f"expected AUC at the external centre ({len(test)} cases)\n")
    print("| endpoint | lesion variables | expected AUC |\n|---|---|---|")
    for endpoint, label, value in rows:
        print(f"| {endpoint} | {label} | {value:.3f} |")
    print(f"\n{time.perf_counter() - started:.0f} s on {os.cpu_count()} CPU(s)")


if __name__ == "__main__":
    main()
