"""Fake source trees in the published layouts of public datasets, rendered by the synthetic generator.

Real data cannot be downloaded here, so each converter test writes a tiny copy of its source
layout (file names, label values, table columns, several exams per patient) from synthetic cases.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.synthetic.cases import STREAM_RENDER, CaseSpec, case_rng, plan_cohort, sample_case
from glmil_auto.synthetic.render import RenderedCase, render_case

FACTOR = 4.0  # the "tiny" size preset: volumes of a few ten thousand voxels


@lru_cache(maxsize=8)
def rendered_cases(n: int, seed: int = 0) -> tuple[tuple[CaseSpec, RenderedCase], ...]:
    """``n`` synthetic cases (specification and rendered T1c, FLAIR, mask) on 3 training centres."""
    out = []
    for plan in plan_cohort(n, 0, 4, seed):
        spec = sample_case(seed, plan)
        out.append((spec, render_case(spec, FACTOR, case_rng(seed, plan.index, STREAM_RENDER))))
    return tuple(out)


def image(array: np.ndarray, geometry: Geometry, pixel=None) -> sitk.Image:
    result = geometry.apply_to(sitk.GetImageFromArray(np.asarray(array)))
    return result if pixel is None else sitk.Cast(result, pixel)


def save(array: np.ndarray, geometry: Geometry, path: Path, pixel=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image(array, geometry, pixel), str(path), useCompression=True)
    return path


def t1_pre(rc: RenderedCase) -> np.ndarray:
    """A stand-in T1 without contrast: the T1c with the lesion enhancement flattened."""
    return np.where(rc.mask > 0, np.median(rc.t1c[rc.t1c > 0]), rc.t1c).astype(np.float32)


def brats_labels(mask: np.ndarray) -> np.ndarray:
    """BraTS-METS labels from a binary lesion mask: 3 enhancing rim, 1 necrotic core (the eroded
    interior), 2 oedema (a one-voxel shell outside the lesion)."""
    lesion = mask > 0
    core = ndimage.binary_erosion(lesion)
    oedema = ndimage.binary_dilation(lesion) & ~lesion
    out = np.zeros(mask.shape, np.uint8)
    out[oedema], out[lesion], out[core] = 2, 3, 1
    return out


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


# NYUMets-Brain patient patterns: (studies as (study id, days from GK, segmented)), visits beyond the
# studies as (days, num_tumor_progress, new_metastases, death), individual.csv death and follow-up
# days, and the outcomes the converter must derive with a 365-day horizon.
NYU_PATTERNS = (
    {"studies": (("s1", -200, False), ("s2", -5, True), ("s3", 90, True)),
     "visits": ((90, 1, 0, 0), (200, 0, 2, 0)), "days_to_death": "400", "total_fu_time": "400",
     "expected": {"local_failure": 1.0, "distant_failure": 1.0, "os_months": round(400 / 30.4375, 3), "os_event": 1.0}},
    {"studies": (("s1", -3, True),), "visits": ((100, 0, 0, 0), (400, 0, 0, 0)), "days_to_death": "",
     "total_fu_time": "420",
     "expected": {"local_failure": 0.0, "distant_failure": 0.0, "os_months": round(420 / 30.4375, 3), "os_event": 0.0}},
    {"studies": (("s1", -1, True),), "visits": ((60, 0, 0, 0), (150, 0, 0, 1)), "days_to_death": "",
     "total_fu_time": "",
     "expected": {"local_failure": 0.0, "distant_failure": 0.0, "os_months": round(150 / 30.4375, 3), "os_event": 1.0}},
    {"studies": (("s1", -2, True),), "visits": ((30, 0, 0, 0),), "days_to_death": "", "total_fu_time": "100",
     "expected": {"local_failure": float("nan"), "distant_failure": float("nan"),
                  "os_months": round(100 / 30.4375, 3), "os_event": 0.0}},
)


def write_nyumets(root: Path, n_patients: int = 5, seed: int = 2) -> tuple[Path, dict[str, dict]]:
    """``root/imaging/patientId/<pid>/studyId/<sid>/{CT1,T1,T2,FLAIR,RTSTRUCT_segmentation}.nii.gz`` and
    ``root/{individual,timeseries,gkdetails}.csv``. Patients cycle through :data:`NYU_PATTERNS`; the
    last one has its only segmented study after Gamma Knife (it must be skipped). T2 is stored on a
    coarser grid; the segmentation numbers its lesions 1..n. Returns the expected rows per case id."""
    cases = rendered_cases(n_patients, seed)
    individual, timeseries, gk, expected = [], [], [], {}
    for p in range(n_patients):
        spec, rc = cases[p]
        pid = f"{1001 + p}"
        pattern = NYU_PATTERNS[p % len(NYU_PATTERNS)]
        studies = pattern["studies"] if p < n_patients - 1 else (("s1", 30, True),)
        coarse = Geometry(tuple(max(2, n // 2) for n in rc.grid.shape), tuple(2 * s for s in rc.grid.spacing),
                          rc.grid.origin, rc.grid.direction)
        t2 = sitk.Resample(image(rc.flair, rc.grid), image(np.zeros(coarse.shape, np.float32), coarse))
        for sid, days, segmented in studies:
            folder = root / "imaging" / "patientId" / pid / "studyId" / sid
            save(rc.t1c, rc.grid, folder / "CT1.nii.gz")
            save(t1_pre(rc), rc.grid, folder / "T1.nii.gz")
            save(rc.flair, rc.grid, folder / "FLAIR.nii.gz")
            folder.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(t2, str(folder / "T2.nii.gz"), useCompression=True)
            if segmented:
                numbered = ndimage.label(rc.mask > 0, structure=np.ones((3, 3, 3)))[0].astype(np.uint8)
                save(numbered, rc.grid, folder / "RTSTRUCT_segmentation.nii.gz", sitk.sitkUInt8)
            timeseries.append({"patient_id": pid, "study_id": sid, "visit_class": "pre" if days <= 0 else "follow-up",
                               "time_from_gk_days": str(days), "kps_at_gks": "80" if days <= 0 else "",
                               "num_tumor_progress": "0", "new_metastases": "0", "death": "0"})
        for days, progress, new, death in pattern["visits"]:
            timeseries.append({"patient_id": pid, "study_id": "", "visit_class": "follow-up",
                               "time_from_gk_days": str(days), "kps_at_gks": "", "num_tumor_progress": str(progress),
                               "new_metastases": str(new), "death": str(death)})
        individual.append({"patient_id": pid, "age_diagnosis": str(int(spec.clinical["age"])),
                           "primary_histology": spec.clinical["primary"],
                           "extracranial_disease_status": "yes" if spec.clinical["extracranial_disease"] else "no",
                           "num_tumors_init": str(len(spec.lesions)), "rpa": "2",
                           "prior_wbrt": "Yes" if spec.clinical["prior_wbrt"] else "No",
                           "days_to_death_from_gk": pattern["days_to_death"], "total_fu_time": pattern["total_fu_time"]})
        for les in spec.lesions:
            gk.append({"patient_id": pid, "target_volume": f"{les.volume_mm3 / 1000:.3f}",
                       "margin_dose": f"{les.dose_gy if les.dose_gy else 20:.1f}"})
        if p < n_patients - 1:
            pre = max((s for s in studies if s[2] and s[1] <= 0), key=lambda s: s[1])[0]
            expected[f"{pid}_{pre}"] = {**pattern["expected"], "patient_id": pid, "n_targets": len(spec.lesions),
                                        "total_volume": sum(round(les.volume_mm3 / 1000, 3) for les in spec.lesions)}
    pd.DataFrame(individual).to_csv(root / "individual.csv", index=False)
    pd.DataFrame(timeseries).to_csv(root / "timeseries.csv", index=False)
    pd.DataFrame(gk).to_csv(root / "gkdetails.csv", index=False)
    return root, expected
