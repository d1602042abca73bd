"""Decide, from DICOM headers only, what each case of a DICOM-RT conversion is made of.

For every patient and study with an RT structure set whose structures match the regular
expression: which MR series is each channel (SeriesDescription regex), which series gives the
reference grid, on which series the contours were drawn, and the case id. Every problem of every
patient is collected before any pixel is read, so one run lists all that needs fixing.

Rules (documentation/dicom_conversion.md):

- An RTSTRUCT belongs to the study of the MR series it references (ReferencedFrameOfReferenceSequence
  > RTReferencedStudySequence > RTReferencedSeriesSequence); planning systems often export the
  structure set under a study of its own. Without a found referenced series, its own
  StudyInstanceUID is used.
- A study whose structure sets have no matching structure is an error listing the names found; a
  study without any RTSTRUCT (a follow-up scan) is skipped with a warning. With several matching
  structure sets in one study the latest (StructureSetDate/Time) is used, with a warning.
- A channel regex (``re.search``, case-insensitive) must match exactly one MR series of the study;
  when it matches several and one of them is the referenced series, that one is taken.
- The reference grid is the referenced series when it is one of the channels, else the first
  channel. Contours are rasterised on the series they were drawn on (the referenced series,
  even when it is not a channel) and then moved onto the reference grid.
- Case id: the patient id (characters that cannot be in a file name become ``_``); a patient with
  several converted studies gets ``<patient>_<StudyDate>`` per study (and ``_<StudyTime>`` when two
  studies share a date).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from glmil_auto.dataset.safe_names import unsafe_reason
from glmil_auto.dataset_conversion.dicom_errors import DicomConversionError, DicomProblem
from glmil_auto.dataset_conversion.dicom_series import DicomInventory, DicomSeries, RtStructFile
from glmil_auto.dataset_conversion.rtstruct_reader import Structure, StructureSet, read_structure_set

_UNSAFE_CHARACTER = re.compile(r"[^A-Za-z0-9_.+()%\- ]")


@dataclass(frozen=True)
class ChannelRule:
    """A channel name and the regular expression its series' SeriesDescription must match."""

    name: str
    pattern: re.Pattern


@dataclass
class CasePlan:
    """What one case is made of."""

    patient_id: str
    study_uid: str
    study_date: str
    study_time: str
    channels: list[DicomSeries]
    reference: DicomSeries
    contour_series: DicomSeries
    structure_set: StructureSet
    structures: list[Structure]
    case_id: str = ""
    needs_registration: list[str] = field(default_factory=list)  # channel names in another frame


@dataclass
class MatchingResult:
    plans: list[CasePlan]
    warnings: list[DicomProblem]


def safe_patient_id(patient_id: str) -> str:
    """The patient id as a file-name-safe case id (unsafe characters become ``_``)."""
    cleaned = _UNSAFE_CHARACTER.sub("_", patient_id.strip()).replace("..", "_").rstrip(" .")
    if not cleaned or not re.match(r"[A-Za-z0-9_]", cleaned[0]):
        cleaned = "_" + cleaned
    return cleaned[:100]


def _structure_sets(inventory: DicomInventory, pattern: re.Pattern, problems: list[DicomProblem]
                    ) -> dict[tuple[str, str], list[tuple[RtStructFile, StructureSet]]]:
    by_study: dict[tuple[str, str], list[tuple[RtStructFile, StructureSet]]] = defaultdict(list)
    for item in inventory.rtstructs:
        try:
            structure_set = read_structure_set(item.path)
        except DicomConversionError as exc:
            problems.extend(exc.problems)
            continue
        anchor = next((inventory.series[u] for u in structure_set.referenced_series_uids if u in inventory.series),
                      None)
        study = anchor.study_uid if anchor is not None else item.study_uid
        by_study[(item.patient_id, study)].append((item, structure_set))
    return by_study


def _pick_series(rule: ChannelRule, candidates: list[DicomSeries], anchor_uid: str | None, patient: str,
                 problems: list[DicomProblem]) -> DicomSeries | None:
    matches = [s for s in candidates if rule.pattern.search(s.description)]
    if len(matches) == 1:
        return matches[0]
    where = candidates[0].files[0].parent if candidates else None
    available = sorted({s.description for s in candidates})
    if not matches:
        problems.append(DicomProblem(f"no MR series of the study matches channel {rule.name} "
                                     f"(/{rule.pattern.pattern}/); series found: {available}", patient, where))
        return None
    anchored = [s for s in matches if s.series_uid == anchor_uid]
    if anchored:
        return anchored[0]
    problems.append(DicomProblem(
        f"{len(matches)} MR series match channel {rule.name} (/{rule.pattern.pattern}/): "
        f"{sorted(s.description + ' [' + s.series_uid + ']' for s in matches)}; make the regular expression "
        "specific to one", patient, where))
    return None


def plan_cases(inventory: DicomInventory, rules: list[ChannelRule], structures: re.Pattern,
               allow_registration: bool) -> MatchingResult:
    """Match every study; raises :class:`DicomConversionError` with every problem found."""
    problems: list[DicomProblem] = []
    warnings: list[DicomProblem] = []
    sets = _structure_sets(inventory, structures, problems)
    plans: list[CasePlan] = []
    studies_with_rt = set(sets)
    for series in inventory.series.values():
        key = (series.patient_id, series.study_uid)
        if key not in studies_with_rt:
            studies_with_rt.add(key)
            warnings.append(DicomProblem(f"study {series.study_uid} ({series.study_date or 'no date'}) has no "
                                         "RTSTRUCT: skipped", series.patient_id, series.files[0].parent,
                                         "warning"))
    for (patient, study), candidates in sorted(sets.items()):
        matching = [(f, s) for f, s in candidates if s.select(structures)]
        if not matching:
            names = sorted({st.name for _, s in candidates for st in s.structures})
            problems.append(DicomProblem(f"no structure name matches /{structures.pattern}/ in the structure "
                                         f"set(s) of study {study}; names found: {names}", patient,
                                         candidates[0][0].path))
            continue
        matching.sort(key=lambda fs: (fs[0].structure_set_date, fs[0].structure_set_time, str(fs[0].path)))
        rt_file, structure_set = matching[-1]
        if len(matching) > 1:
            warnings.append(DicomProblem(f"{len(matching)} structure sets with matching structures in study "
                                         f"{study}; using the latest", patient, rt_file.path, "warning"))
        study_series = [s for s in inventory.series_of(patient) if s.study_uid == study]
        anchor = next((s for s in study_series if s.series_uid in structure_set.referenced_series_uids), None)
        if not study_series:
            problems.append(DicomProblem(f"the RTSTRUCT's study {study} has no MR series in the input folder",
                                         patient, rt_file.path))
            continue
        picked = [_pick_series(rule, study_series, anchor.series_uid if anchor else None, patient, problems)
                  for rule in rules]
        if any(p is None for p in picked):
            continue
        uids = [p.series_uid for p in picked]
        if len(set(uids)) != len(uids):
            problems.append(DicomProblem(f"one MR series matches several channels "
                                         f"{[r.name for r in rules]}: {[p.description for p in picked]}",
                                         patient, picked[0].files[0].parent))
            continue
        reference = anchor if anchor is not None and anchor.series_uid in uids else picked[0]
        contour_series = anchor if anchor is not None else reference
        if anchor is None:
            warnings.append(DicomProblem("the RTSTRUCT references no MR series found in the folder; its contours "
                                         f"are rasterised on channel {rules[0].name}", patient, rt_file.path,
                                         "warning"))
        selected = structure_set.select(structures)
        frame = contour_series.frame_of_reference
        other_frames = [s.name for s in selected if s.frame_of_reference and frame and s.frame_of_reference != frame]
        if other_frames:
            problems.append(DicomProblem(f"structures {other_frames} are in another frame of reference than "
                                         f"series '{contour_series.description}'", patient, rt_file.path))
            continue
        plan = CasePlan(patient, study, picked[0].study_date, picked[0].study_time, picked, reference,
                        contour_series, structure_set, selected)
        for rule, series in zip(rules, picked):
            if series.frame_of_reference != reference.frame_of_reference:
                if not allow_registration:
                    problems.append(DicomProblem(
                        f"channel {rule.name} (series '{series.description}') is in another frame of reference "
                        f"than the reference series '{reference.description}'; use --register to align it "
                        "rigidly", patient, series.files[0].parent))
                plan.needs_registration.append(rule.name)
        if contour_series.frame_of_reference != reference.frame_of_reference and not allow_registration:
            problems.append(DicomProblem(f"the contours' series '{contour_series.description}' is in another frame "
                                         "of reference than the reference grid; use --register", patient,
                                         rt_file.path))
        plans.append(plan)
    if problems:
        raise DicomConversionError(problems + warnings)
    if not plans:
        raise DicomConversionError(DicomProblem("no study with an RTSTRUCT and MR series found"))
    assign_case_ids(plans)
    return MatchingResult(plans, warnings)


def assign_case_ids(plans: list[CasePlan]) -> None:
    """Set ``case_id`` on every plan (see the module docstring); raises on ids that still collide."""
    by_patient: dict[str, list[CasePlan]] = defaultdict(list)
    for plan in plans:
        by_patient[plan.patient_id].append(plan)
    for patient, own in by_patient.items():
        base = safe_patient_id(patient)
        if len(own) == 1:
            own[0].case_id = base
            continue
        own.sort(key=lambda p: (p.study_date, p.study_time, p.study_uid))
        dates = [p.study_date or "nodate" for p in own]
        for plan, date in zip(own, dates):
            plan.case_id = f"{base}_{date}" if dates.count(date) == 1 else f"{base}_{date}_{plan.study_time or 'x'}"
    seen: dict[str, CasePlan] = {}
    problems = []
    for plan in plans:
        if plan.case_id in seen:
            problems.append(DicomProblem(f"case id {plan.case_id!r} is produced by two studies (patients "
                                         f"{seen[plan.case_id].patient_id!r} and {plan.patient_id!r})",
                                         plan.patient_id))
        seen[plan.case_id] = plan
        reason = unsafe_reason(plan.case_id)
        if reason:
            problems.append(DicomProblem(f"case id {plan.case_id!r} {reason}", plan.patient_id))
    if problems:
        raise DicomConversionError(problems)
