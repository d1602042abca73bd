"""A fake NYUMets-Brain source tree for the converter tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from conversion_sources import image, rendered_cases, save, t1_pre
from glmil_auto.dataset.image_io import Geometry


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
