"""How much can only the images add? Truth ceiling vs a clinical model, per endpoint.

On a large non-rendered synthetic cohort (default 20,000 cases; no images are rendered, the
outcome model only needs the analytic lesion geometry): the truth ceiling is the AUC of the true
probabilities against the drawn outcomes (Harrell's C of the true linear predictor for OS); the
clinical model is a logistic regression (Cox model for OS) on age, KPS, primary, extracranial
disease, prior WBRT plus lesion count and total lesion volume (and their logs), fitted on one half
and evaluated on the other. Usage:

    python benchmarks/synthetic_clinical_gap.py [--n 20000] [--seed 0] [-np 2]
"""

from __future__ import annotations

import argparse
import time

from glmil_auto.synthetic import cohort_frame, sample_cohort
from glmil_auto.synthetic.gap import clinical_gap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000, help="cases (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_centres", type=int, default=4, help="centres incl. the external one (training centres are sampled)")
    p.add_argument("-np", "--num_processes", type=int, default=2)
    args = p.parse_args()
    t0 = time.perf_counter()
    specs = sample_cohort(args.n, seed=args.seed, n_centres=args.n_centres, num_processes=args.num_processes)
    t1 = time.perf_counter()
    frame = cohort_frame(specs)
    table = clinical_gap(frame, seed=args.seed)
    t2 = time.perf_counter()
    print(f"synthetic cohort: {args.n} non-rendered cases, seed {args.seed}; sampled in {t1 - t0:.1f} s "
          f"({1000 * (t1 - t0) / args.n:.2f} ms/case with {args.num_processes} process(es)), models {t2 - t1:.1f} s")
    print("clinical model = clinical variables + lesion count + total lesion volume; fit on 50 %, evaluated on 50 %\n")
    header = f"| {'endpoint':<24} | {'metric':<9} | {'n eval':>6} | {'prevalence / event rate':>23} | {'truth ceiling':>13} | {'clinical':>8} | {'gap':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in table.itertuples():
        print(f"| {r.endpoint:<24} | {r.metric:<9} | {r.n_eval:>6} | {r.prevalence:>23.3f} | {r.truth_ceiling:>13.3f} | "
              f"{r.clinical:>8.3f} | {r.gap:>6.3f} |")


if __name__ == "__main__":
    main()
