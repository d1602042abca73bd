"""Fake UCSF-BMSR and BraTS-METS / Pretreat-MetsToBrain-Masks source trees for the converter tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from conversion_sources import brats_labels, rendered_cases, save, t1_pre


def write_ucsf_bmsr(root: Path, exams_per_patient: tuple[int, ...] = (2, 1, 2)) -> tuple[Path, pd.DataFrame]:
    """``root/<SubjectID>/<SubjectID>_{T1pre,T1post,FLAIR,subtraction,seg}.nii.gz`` plus the subject
    table; SubjectID = 6-digit patient id + exam letter (100101A, 100101B, ...). Returns the table."""
    cases = rendered_cases(sum(exams_per_patient))
    rows, k = [], 0
    for p, n_exams in enumerate(exams_per_patient):
        for e in range(n_exams):
            spec, rc = cases[k]
            k += 1
            subject = f"{100101 + p}{'ABCDEFG'[e]}"
            folder = root / subject
            pre = t1_pre(rc)
            for suffix, array in (("T1pre", pre), ("T1post", rc.t1c), ("FLAIR", rc.flair),
                                  ("subtraction", rc.t1c - pre)):
                save(array, rc.grid, folder / f"{subject}_{suffix}.nii.gz")
            save(rc.mask, rc.grid, folder / f"{subject}_seg.nii.gz", sitk.sitkUInt8)
            rows.append({"SubjectID": subject, "Sex": "F" if p % 2 else "M", "Age": str(int(spec.clinical["age"])),
                         "CancerType": spec.clinical["primary"], "Scanner Strength (Tesla)": "3" if e else "1.5",
                         "Prior Craniotomy/Biopsy/Resection": "Yes" if p == 0 else "No",
                         "BraTS_ID": f"BraTS-MET-{k:05d}-000" if p == 1 else ""})
    table = pd.DataFrame(rows)
    table.to_csv(root / "UCSF_BMSR_subjects.csv", index=False)
    return root, table


def write_brats_mets(root: Path, timepoints: tuple[int, ...] = (1, 2, 1)) -> Path:
    """``root/BraTS-MET-XXXXX-YYY/BraTS-MET-XXXXX-YYY-{t1c,t1n,t2f,t2w,seg}.nii.gz`` on one 1 mm-like
    grid, labels 1 necrotic core, 2 oedema, 3 enhancing; YYY numbers the time points of a patient."""
    cases = rendered_cases(sum(timepoints), seed=1)
    k = 0
    for p, n in enumerate(timepoints):
        for t in range(n):
            _, rc = cases[k]
            k += 1
            case = f"BraTS-MET-{p + 2:05d}-{t:03d}"
            folder = root / case
            for suffix, array in (("t1c", rc.t1c), ("t1n", t1_pre(rc)), ("t2f", rc.flair), ("t2w", rc.flair[::-1])):
                save(array, rc.grid, folder / f"{case}-{suffix}.nii.gz")
            save(brats_labels(rc.mask), rc.grid, folder / f"{case}-seg.nii.gz", sitk.sitkUInt8)
    return root
