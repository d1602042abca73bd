"""How much of each endpoint a clinical table can explain, against the truth ceiling.

On a non-rendered cohort: the truth ceiling is the AUC (Harrell's C for OS) of the true
probabilities (true linear predictor) against the drawn outcomes; the clinical baseline is a
logistic regression (Cox model for OS) on the clinical variables plus lesion count and total
lesion volume, fitted on one half and evaluated on the other. The gap is what only the images
can add.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from glmil_auto.synthetic.clinical import PRIMARIES
from glmil_auto.synthetic.outcomes import BINARY_ENDPOINTS


def clinical_design(frame: pd.DataFrame) -> np.ndarray:
    """Clinical variables (primary one-hot) plus lesion count and total volume, with logs."""
    cols = [
        frame["age"].to_numpy(float),
        frame["kps"].to_numpy(float),
        frame["extracranial_disease"].to_numpy(float),
        frame["prior_wbrt"].to_numpy(float),
        frame["n_lesions"].to_numpy(float),
        np.log(frame["n_lesions"].to_numpy(float)),
        frame["total_volume_cc"].to_numpy(float),
        np.log(frame["total_volume_cc"].to_numpy(float)),
    ]
    cols += [(frame["primary"] == p).to_numpy(float) for p in PRIMARIES[1:]]
    x = np.column_stack(cols)
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)


def clinical_gap(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per endpoint: n_eval, prevalence, truth_ceiling, clinical, gap."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored

    x = clinical_design(frame)
    half = np.random.default_rng(seed).permutation(len(frame)) < len(frame) // 2
    rows = []
    for name in BINARY_ENDPOINTS:
        y = frame[name].to_numpy()
        known = ~np.isnan(y)
        fit, ev = half & known, ~half & known
        model = LogisticRegression(max_iter=2000).fit(x[fit], y[fit].astype(int))
        clin = roc_auc_score(y[ev], model.predict_proba(x[ev])[:, 1])
        ceiling = roc_auc_score(y[ev], frame[f"p_{name}"].to_numpy()[ev])
        rows.append(dict(endpoint=name, metric="AUC", n_eval=int(ev.sum()), prevalence=float(y[known].mean()),
                         truth_ceiling=ceiling, clinical=clin, gap=ceiling - clin))
    event = frame["os_event"].to_numpy().astype(bool)
    time = frame["os_months"].to_numpy(float)
    surv = np.array(list(zip(event, time)), dtype=[("event", bool), ("time", float)])
    cox = CoxPHSurvivalAnalysis(alpha=1e-4).fit(x[half], surv[half])
    ev = ~half
    clin = concordance_index_censored(event[ev], time[ev], cox.predict(x[ev]))[0]
    ceiling = concordance_index_censored(event[ev], time[ev], frame["os_linear_predictor"].to_numpy()[ev])[0]
    rows.append(dict(endpoint="os", metric="Harrell C", n_eval=int(ev.sum()), prevalence=float(event.mean()),
                     truth_ceiling=ceiling, clinical=clin, gap=ceiling - clin))
    return pd.DataFrame(rows)
