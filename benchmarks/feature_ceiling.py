"""How much of the synthetic cohort's signal can lesion measurements recover? A study of what the
images allow, for the accuracy goals of documentation/accuracy.md.

    python benchmarks/feature_ceiling.py [--dataset 10] [--np 2]

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


def measured_lesions(raw_folder: Path, num_processes: int) -> pd.DataFrame:
    """The radiomics peer's lesion features of both splits, plus the measured size as the truth's
    size variables (log diameter over 8 mm and the RTOG dose steps from the equivalent diameter)."""
    from glmil_auto.evaluation.radiomics_peer import extract_dataset_features
    from glmil_auto.synthetic.outcomes import srs_dose_gy

    frame = pd.concat([extract_dataset_features(raw_folder, split, num_processes=num_processes, progress=False)
                       for split in ("Tr", "Ts")], ignore_index=True)
    frame["lesion_label"] = frame["lesion_label"].astype(int)
    diameter = frame["equivalent_diameter_mm"].clip(lower=0.5)
    dose = diameter.map(srs_dose_gy)
    frame["measured_log_diameter"] = np.log(diameter / 8.0)
    frame["measured_dose_18"] = (dose == 18.0).astype(float)
    frame["measured_dose_15"] = (dose == 15.0).astype(float)
    return frame


def noisy_or_auc(lesions: pd.DataFrame, cases: pd.DataFrame, features: list[str], seed: int) -> float:
    from glmil_auto.evaluation.expected_auc import expected_auc
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

    from glmil_auto.evaluation.expected_auc import expected_auc

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
    args = parser.parse_args()

    from glmil_auto.evaluation.expected_auc import expected_auc
    from glmil_auto.paths import raw_dataset_folder

    started = time.perf_counter()
    raw = Path(raw_dataset_folder(args.dataset))
    truth_file = raw.parent / f"{raw.name}_truth.json"
    if not truth_file.is_file():
        raise SystemExit(f"{truth_file} not found: this study needs a synthetic dataset's truth file")
    cases, true_lesions = truth_frames(json.loads(truth_file.read_text()))
    measured = measured_lesions(raw, args.np)
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
