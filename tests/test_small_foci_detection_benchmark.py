"""benchmarks/small_foci_detection.py: per-centre sensitivity, false positives and the 2-FP operating point."""

from __future__ import annotations

import pytest

from script_modules import load_script

SCRIPT = "benchmarks/small_foci_detection.py"


def record(n_true, candidates, seconds=1.0):
    return {"case": "x", "split": "Tr", "n_true": n_true, "decoys": [], "spacing_zyx": [2.0, 2.0, 6.0],
            "seconds": seconds, "candidates": [{"response": r, "true": t} for r, t in candidates]}


def test_centre_row_counts_hits_and_false_positives_at_the_threshold():
    module = load_script(SCRIPT)
    records = [record(2, [(9.0, True), (6.0, False), (4.0, True)]),
               record(0, [(5.5, False), (3.0, False)]),
               record(1, [(7.0, True)])]
    row = module.centre_row(records, threshold=5.0)
    assert row["true_foci"] == 3 and row["cases"] == 3
    assert row["sensitivity"] == pytest.approx(2 / 3)  # 9.0 and 7.0; the 4.0 hit is below
    assert row["fp_per_case"] == pytest.approx(2 / 3)  # 6.0 and 5.5
    # the best threshold with at most 2 false positives per case lets everything through: 3/3
    assert row["sensitivity_at_2fp"] == pytest.approx(1.0)
    tight = module.centre_row([record(1, [(4.0, True), (8.0, False), (7.0, False), (6.0, False)])], threshold=5.0)
    assert tight["sensitivity"] == 0.0 and tight["fp_per_case"] == 3.0
    assert tight["sensitivity_at_2fp"] == 0.0  # reaching the hit at 4.0 costs 3 false positives
    assert module.match_distance_mm([2.0, 2.0, 6.0]) == 4.0 and module.match_distance_mm([1.0, 1.0, 1.0]) == 3.0
