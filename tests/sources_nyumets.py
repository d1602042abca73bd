"""A fake NYUMets-Brain download in the verified layout, for the converter tests::

    ROOT/data/imaging/patientId/<PatientID>/studyId/<StudyID>/{T1,CT1,T2,FLAIR,RTSTRUCT_MRI,
        RTSTRUCT_segmentation}.nii.gz                 (each study holds only some of them)
    ROOT/metadata/20220915_imaging.csv                PatientID, StudyID, ExpertAdjusted, RelativeTimepoint, ...
    ROOT/metadata/20220822_traintestsplits.csv        a csv the converter must ignore
    ROOT/metadata/20230301_clinical_{patients,visits,procedures}.csv   keyed by patient_identifier
        (file names invented: the real ones are not confirmed; the converter finds them by columns)

Study ids are random numbers that do not sort in time order; the Gamma Knife details table has
two procedures per patient, the later one listed first; one study lacks T2; one mask is a warped
(non-binary) PTV; one patient has an unknown extracranial_disease_status value and one visit an
unknown new_metastases value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from conversion_sources import image, rendered_cases, save, t1_pre
from glmil_auto.dataset.image_io import Geometry

ALL = ("T1", "CT1", "T2", "FLAIR", "RTSTRUCT_MRI", "SEG")
SEG = "RTSTRUCT_segmentation"
# per patient: studies as (StudyID, RelativeTimepoint, files), the study the default rule ("gk")
# and the "earliest" rule pick, visits as (days, num_tumor_progress, new_metastases), patient-level
# death / days_to_death_from_gk / total_fu_time, and the outcomes with a 365-day horizon
NYU_PATTERNS = (
    {"studies": (("52301", -200, ALL[:4] + ("SEG",)), ("90412", 0, ALL), ("11873", 90, ALL[:4] + ("SEG",))),
     "gk": "90412", "earliest": "52301", "t1c_file": "RTSTRUCT_MRI",
     "visits": ((0, "0", "0"), (90, "1", "0"), (200, "0", "1")), "death": "1", "days_to_death": "400",
     "total_fu_time": "400",
     "expected": {"local_failure": 1.0, "distant_failure": 1.0, "os_months": round(400 / 30.4375, 3), "os_event": 1.0}},
    {"studies": (("70455", -3, ("T1", "CT1", "FLAIR", "SEG")),), "gk": "70455", "earliest": "70455",
     "t1c_file": "CT1", "warped_mask": True,
     "visits": ((0, "0", "0"), (100, "0", "0"), (400, "0", "?")), "death": "0", "days_to_death": "",
     "total_fu_time": "420",
     "expected": {"local_failure": 0.0, "distant_failure": 0.0, "os_months": round(420 / 30.4375, 3), "os_event": 0.0}},
    {"studies": (("30981", 0, ("RTSTRUCT_MRI", "SEG")),), "gk": "30981", "earliest": "30981",
     "t1c_file": "RTSTRUCT_MRI",
     "visits": ((0, "0", "0"), (60, "0", "0"), (150, "0", "0")), "death": "1", "days_to_death": "150",
     "total_fu_time": "",
     "expected": {"local_failure": 0.0, "distant_failure": 0.0, "os_months": round(150 / 30.4375, 3), "os_event": 1.0}},
    {"studies": (("64002", -2, ALL), ("12007", -30, ALL[:5])), "gk": "64002", "earliest": "64002",
     "t1c_file": "RTSTRUCT_MRI", "extracranial": "3",
     "visits": ((0, "0", "0"), (30, "0", "0")), "death": "0", "days_to_death": "", "total_fu_time": "100",
     "expected": {"local_failure": float("nan"), "distant_failure": float("nan"),
                  "os_months": round(100 / 30.4375, 3), "os_event": 0.0}},
)
LATE_ONLY = {"studies": (("48211", 30, ALL),), "gk": None, "earliest": "48211", "t1c_file": "RTSTRUCT_MRI"}


def warped(mask: np.ndarray) -> np.ndarray:
    """A binary mask as a PTV warped with linear interpolation: 0.7 on its inner border, 0.3 on the
    voxels just outside it (thresholded at 0.5 it is the mask again)."""
    lesion = mask > 0
    out = lesion.astype(np.float32)
    out[lesion & ~ndimage.binary_erosion(lesion)] = 0.7
    out[ndimage.binary_dilation(lesion) & ~lesion] = 0.3
    return out


def _write_study(folder: Path, files: tuple[str, ...], rc, coarse: Geometry, warped_mask: bool) -> None:
    volumes = {"T1": t1_pre(rc), "CT1": rc.t1c, "FLAIR": rc.flair, "RTSTRUCT_MRI": rc.t1c * 1.1}
    for name in files:
        if name in volumes:
            save(volumes[name], rc.grid, folder / f"{name}.nii.gz")
    if "T2" in files:  # on a 2x coarser grid: resampled onto the reference
        folder.mkdir(parents=True, exist_ok=True)
        t2 = sitk.Resample(image(rc.flair, rc.grid), image(np.zeros(coarse.shape, np.float32), coarse))
        sitk.WriteImage(t2, str(folder / "T2.nii.gz"), useCompression=True)
    if "SEG" in files:
        if warped_mask:
            save(warped(rc.mask), rc.grid, folder / f"{SEG}.nii.gz", sitk.sitkFloat32)
        else:
            save((rc.mask > 0).astype(np.uint8), rc.grid, folder / f"{SEG}.nii.gz", sitk.sitkUInt8)


def _coarse(rc) -> Geometry:
    return Geometry(tuple(max(2, n // 2) for n in rc.grid.shape), tuple(2 * s for s in rc.grid.spacing),
                    rc.grid.origin, rc.grid.direction)


def _clinical_rows(pid: str, p: int, spec, pattern: dict) -> tuple[dict, list[dict], list[dict]]:
    """The patient's rows of the patient-level table, the time series and the details table."""
    patient = {"patient_identifier": pid, "age_diagnosis": str(int(spec.clinical["age"])),
               "primary_histology": str(p % 13 + 1), "extracranial_disease_status": pattern.get(
                   "extracranial", "2" if spec.clinical["extracranial_disease"] else "1"),
               "num_tumors_init": str(len(spec.lesions)), "rpa": "2",
               "prior_wbrt": "1" if spec.clinical["prior_wbrt"] else "0",
               "total_fu_time": pattern.get("total_fu_time", "50"), "days_to_death_from_gk": pattern.get(
                   "days_to_death", ""), "death": pattern.get("death", "0")}
    visits = [{"patient_identifier": pid, "time_from_gk_days": str(days), "num_tumor_progress": progress,
               "new_metastases": new, "kps_fu": "" if days == 0 else "70"}
              for days, progress, new in pattern.get("visits", ((0, "0", "0"),))]
    first = {"patient_identifier": pid, "time_from_gk_days": "0", "target_volume": f"{_volume(spec):.3f}",
             "margin_dose": "20.0", "kps_at_gks": "80"}
    later = {"patient_identifier": pid, "time_from_gk_days": "210", "target_volume": "0.800", "margin_dose": "24.0",
             "kps_at_gks": "60"}
    return patient, visits, [later, first]  # the later procedure first: the order column must decide


def _volume(spec) -> float:
    return round(sum(les.volume_mm3 for les in spec.lesions) / 1000, 3)


def write_nyumets(root: Path, n_patients: int = 5, seed: int = 2) -> tuple[Path, dict[str, dict]]:
    """Write the fake download under ``root``; patients cycle through :data:`NYU_PATTERNS` and the
    last one has :data:`LATE_ONLY` (its only segmented study is after Gamma Knife). Returns ``root``
    and, per case id the default rule must produce, the expected values (``earliest`` holds the
    case id of the ``earliest`` rule)."""
    cases = rendered_cases(n_patients, seed)
    imaging, patients, visits, procedures, expected = [], [], [], [], {}
    for p in range(n_patients):
        spec, rc = cases[p]
        pid = str(1001 + p)
        pattern = NYU_PATTERNS[p % len(NYU_PATTERNS)] if p < n_patients - 1 else LATE_ONLY
        for sid, timepoint, files in pattern["studies"]:
            _write_study(root / "data" / "imaging" / "patientId" / pid / "studyId" / sid, files, rc, _coarse(rc),
                         pattern.get("warped_mask", False))
            imaging.append({"PatientID": pid, "StudyID": sid, "ExpertAdjusted": "1" if sid == pattern["gk"] else "0",
                            "RelativeTimepoint": str(timepoint),
                            **{(SEG if n == "SEG" else n): str(n in files) for n in ALL}})
        patient, patient_visits, gk = _clinical_rows(pid, p, spec, pattern)
        patients.append(patient)
        visits += patient_visits
        procedures += gk
        if pattern["gk"] is not None:
            expected[f"{pid}_{pattern['gk']}"] = {
                **pattern["expected"], "patient_id": pid, "earliest": f"{pid}_{pattern['earliest']}",
                "t1c_file": pattern["t1c_file"], "age_diagnosis": float(patient["age_diagnosis"]),
                "primary_histology": int(patient["primary_histology"]),
                "extracranial_disease_active": {"1": 0.0, "2": 1.0}.get(patient["extracranial_disease_status"],
                                                                        float("nan")),
                "prior_wbrt": float(patient["prior_wbrt"]), "num_tumors_init": float(len(spec.lesions)),
                "kps_at_gks": 80.0, "gk_target_volume": _volume(spec), "gk_margin_dose": 20.0,
                "warped_mask": pattern.get("warped_mask", False), "files": pattern["studies"]}
    metadata = root / "metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(sorted(imaging, key=lambda r: r["StudyID"])).to_csv(metadata / "20220915_imaging.csv", index=False)
    pd.DataFrame({"StudyID": [r["StudyID"] for r in imaging], "train": 1, "val": 0, "test": 0}).to_csv(
        metadata / "20220822_traintestsplits.csv", index=False)
    pd.DataFrame(patients).to_csv(metadata / "20230301_clinical_patients.csv", index=False)
    pd.DataFrame(visits).to_csv(metadata / "20230301_clinical_visits.csv", index=False)
    pd.DataFrame(procedures).to_csv(metadata / "20230301_clinical_procedures.csv", index=False)
    return root, expected
