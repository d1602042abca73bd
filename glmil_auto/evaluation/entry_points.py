"""``glmil_evaluate_predictions``: the old name of ``glmil_evaluate`` (kept as an alias).

    glmil_evaluate_predictions -d DATASET -i PREDICTIONS_CSV [-s Ts|Tr] [-o OUT_FOLDER] [...]

It runs :func:`glmil_auto.evaluation.evaluate_command.evaluate_entry` with the same arguments;
the old ``-s Tr`` (evaluate against ``clinicalTr.csv``) becomes ``-c <raw dataset>/clinicalTr.csv``.
What used to be its whole output (AUC / Harrell's C with bootstrap CIs and, for the synthetic
cohort, the truth ceiling) is part of ``glmil_evaluate``'s ``metrics.json``; ``-o`` is now the
output folder (default: ``evaluation/`` beside the predictions).
"""

from __future__ import annotations

import sys

from glmil_auto.evaluation.evaluate_command import evaluate_entry

PROG = "glmil_evaluate_predictions"


def legacy_arguments(argv: list[str]) -> list[str]:
    """``argv`` with ``-s/--split Ts|Tr`` replaced by ``-c`` pointing at that clinical table."""
    out, i = [], 0
    split = None
    while i < len(argv):
        if argv[i] in ("-s", "--split") and i + 1 < len(argv):
            split = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith("--split="):
            split = argv[i].split("=", 1)[1]
            i += 1
            continue
        out.append(argv[i])
        i += 1
    if split is None:
        return out
    if split not in ("Ts", "Tr"):
        raise SystemExit(f"{PROG}: error: -s must be Ts or Tr, got {split!r}")
    dataset = next((out[j + 1] for j, a in enumerate(out[:-1]) if a in ("-d", "--dataset")), None)
    if dataset is None:
        return out  # argparse says what is missing
    from glmil_auto.dataset import layout
    from glmil_auto.paths import raw_dataset_folder

    try:
        folder = raw_dataset_folder(dataset)
    except Exception as exc:  # noqa: BLE001 - one line, as glmil_evaluate reports it
        raise SystemExit(f"{PROG}: error: {exc}") from None
    return [*out, "-c", str(layout.clinical_file(folder, split))]


def evaluate_predictions_entry(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return evaluate_entry(legacy_arguments(argv))


if __name__ == "__main__":
    sys.exit(evaluate_predictions_entry())
