"""One case, raw arrays -> preprocessed arrays + JSON properties.

This is the only preprocessing code path: training cases, held-out cases and, later, new cases
at prediction time all go through :meth:`CasePreprocessor.run_case`, so a model never sees data
prepared differently from what it was trained on.

Steps: canonical orientation (axis swaps and flips, exact) -> skull-stripping detection (when the
plans ask for it) -> head mask and its depth map -> brain region (for a skull-stripped case all
three come from the nonzero region, see :mod:`glmil_auto.imaging.case_regions`) -> per-channel
normalisation -> global volume (channels, the small-foci channel when the plans have one, and the
lesion-mask channel) on an isotropic grid centred on the head -> lesion instances (26-connected components), the largest ``max_instances`` kept -> for
every kept lesion and every context scale, a patch centred on its centroid (channels + that
lesion's own mask), padded with the background level at the borders.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.lesion_instances import find_lesion_instances
from glmil_auto.imaging.case_regions import case_regions
from glmil_auto.imaging.head_mask import bounding_box
from glmil_auto.imaging.orientation import to_canonical
from glmil_auto.imaging.skull_stripping import SCALP_AND_SKULL_MM
from glmil_auto.preprocessing.lesion_features.stored_features import json_float
from glmil_auto.preprocessing.normalisation import normalise_channels
from glmil_auto.preprocessing.resampling import grid_centred_on, resample_to_grid
from glmil_auto.preprocessing.storage import check_finite

logger = logging.getLogger(__name__)
PREPROCESSING_VERSION = 1


def input_warnings(images: np.ndarray, lesion_mask: np.ndarray) -> list[str]:
    """What is legal but suspicious about a case's inputs (logged, and kept in its properties and
    prediction JSON): a 3D volume with a single slice, and a lesion mask without any lesion."""
    warnings = []
    thin = [axis for axis, size in zip("zyx", np.shape(images)[1:]) if size == 1]
    if thin:
        warnings.append(f"the images have a single slice along {', '.join(thin)} (shape {list(np.shape(images)[1:])}): "
                        "a 2D image stored as 3D gives the network no through-plane context")
    if not np.any(lesion_mask):
        warnings.append("the lesion mask holds no lesion: the prediction rests on the global volume and the clinical "
                        "inputs only")
    return warnings


class CasePreprocessor:
    """Applies the ``preprocessing`` section of a plans file to one case."""

    def __init__(self, plans: dict[str, Any]):
        self.plans = plans
        self.config = plans["preprocessing"]

    def run_case(
        self, images: np.ndarray, lesion_mask: np.ndarray, geometry: Geometry, case_id: str,
        lesion_rows: Any = None, lesion_file: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Returns ``global (C+1, Z, Y, X)`` (``C+2`` with the small-foci channel), ``local (N, S, C+1, pz, py, px)`` (float32) and properties.

        ``lesion_rows``: the case's rows of the raw dataset's lesion table (``lesionsTr.csv``, typed by
        :func:`glmil_auto.dataset.lesion_outcomes.read_lesion_table`) or None; each lesion's
        outcomes of the plans' any_lesion endpoints are then stored with it (``outcomes``)."""
        warnings = input_warnings(images, lesion_mask)
        for message in warnings:
            logger.warning("case %s: %s", case_id, message)
        images_c, canonical = to_canonical(images, geometry)
        mask_c, _ = to_canonical(np.asarray(lesion_mask, dtype=bool), geometry)
        spacing_zyx = canonical.spacing_zyx

        # plans written before skull-stripping detection have no "skull_stripping" section: every
        # case is then treated as unstripped, as those plans' preprocessed data was
        stripping = self.config.get("skull_stripping")
        regions = case_regions(
            images_c, spacing_zyx, self.config["brain_margin_mm"], detect_stripping=stripping is not None,
            scalp_and_skull_mm=(stripping or {}).get("scalp_and_skull_mm", SCALP_AND_SKULL_MM),
        )
        if regions.skull_stripped:
            logger.info("case %s is skull-stripped (%s)", case_id, regions.check.reason)
        head, depth, brain = regions.head, regions.depth, regions.brain
        normalised, stats = normalise_channels(images_c, brain, head, self.config["normalisation"])
        background = [stats[str(c)]["background"] for c in range(normalised.shape[0])]

        global_array, global_geometry, box = self._global_volume(normalised, mask_c, canonical, head, background)
        foci_record = None
        if self.config.get("small_foci"):  # [images, foci, mask]: the foci channel goes before the mask
            foci, foci_record = self._foci(images_c, canonical, brain, mask_c, global_geometry)
            global_array = np.concatenate([global_array[:-1], foci[None], global_array[-1:]])
        labelled, lesions = find_lesion_instances(mask_c, canonical)
        kept = self._keep(lesions, case_id)
        local_array, patch_geometries = self._patches(normalised, labelled, lesions, kept, canonical, background)
        check_finite(global_array, case_id, "global volume")
        check_finite(local_array, case_id, "lesion patches")

        features = self._lesion_features(normalised, stats, labelled, canonical, regions, case_id)
        outcomes = self._lesion_outcomes(lesion_rows, labelled, lesions, canonical, case_id, lesion_file)
        lesion_table = []
        for lesion in lesions:
            entry = lesion.to_dict()
            if features is not None:
                entry["features"] = features["lesions"][lesion.label]
            if outcomes is not None:
                entry["outcomes"] = {k: json_float(v) for k, v in outcomes[lesion.label].items()}
            index = tuple(int(round(c)) for c in lesion.centroid_index_zyx)
            entry["depth_below_head_surface_mm"] = float(depth[index])
            entry["kept"] = lesion.label in kept
            entry["instance_index"] = kept.index(lesion.label) if lesion.label in kept else None
            lesion_table.append(entry)
        properties = {
            "case_id": case_id,
            "preprocessing_version": PREPROCESSING_VERSION,
            "original_geometry": geometry.to_dict(),
            "canonical_geometry": canonical.to_dict(),
            "head_bbox_canonical": [list(b) for b in box],
            "skull_stripped": regions.skull_stripped,
            "normalisation": stats,
            "global_geometry": global_geometry.to_dict(),
            "lesions": lesion_table,
            "n_lesions": len(lesions),
            "n_instances": len(kept),
            "dropped_lesion_labels": [l.label for l in lesions if l.label not in kept],
            "patch_geometries": [[g.to_dict() for g in per_scale] for per_scale in patch_geometries],
            "warnings": warnings,
        }
        if features is not None:
            properties["case_features"] = features["case"]
        if foci_record is not None:
            properties["small_foci"] = foci_record
        return global_array, local_array, properties

    # -------------------------------------------------------------- lesion outcomes and features
    def _lesion_outcomes(self, rows: Any, labelled: np.ndarray, lesions: list, canonical: Geometry, case_id: str,
                         file: str | None) -> dict[int, dict[str, float]] | None:
        """Per lesion label its outcome of each any_lesion endpoint (NaN = unknown), matched in
        physical coordinates (the canonical grid is the same world as the raw image's); None
        without a lesion table or without such endpoints."""
        endpoints = [e["name"] for e in self.plans.get("endpoints", []) if e.get("aggregation") == "any_lesion"]
        if rows is None or not endpoints:
            return None
        from glmil_auto.dataset.lesion_outcomes import lesion_outcomes_for_case

        return lesion_outcomes_for_case(rows, labelled, lesions, canonical, endpoints, case_id, file)

    def _lesion_features(self, normalised: np.ndarray, stats: dict[str, Any], labelled: np.ndarray,
                         canonical: Geometry, regions: Any, case_id: str) -> dict[str, Any] | None:
        """Per lesion label its radiomic features (``plans["preprocessing"]["lesion_features"]``;
        NaN as None, JSON has no NaN) and the case's patient aggregates; None for plans without them."""
        section = self.config.get("lesion_features")
        if not section:
            return None
        from glmil_auto.preprocessing.lesion_features.features import canonical_lesion_features
        from glmil_auto.preprocessing.lesion_features.lesion_frame import LABEL_COLUMN
        from glmil_auto.preprocessing.lesion_features.patients import patient_features
        from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names

        names = lesion_feature_names(section)
        frame = canonical_lesion_features(normalised, stats, labelled, canonical, regions, section["t1c_channel"],
                                          section["flair_channel"], case_id, section.get("ibsi"))
        per_lesion = {int(row[LABEL_COLUMN]): {n: json_float(row[n]) for n in names} for _, row in frame.iterrows()}
        aggregates = patient_features(frame, [case_id], names).iloc[0]
        case = {n: json_float(aggregates[n]) for n in section["case_features"]}
        return {"lesions": per_lesion, "case": case}

    # -------------------------------------------------------------- small foci
    def _foci(self, images: np.ndarray, canonical: Geometry, brain: np.ndarray, mask: np.ndarray, target: Geometry
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """The foci channel on the global grid and the case's candidates (``foci_channel.py``),
        from the reference channel before normalisation (the detector works in the case's own
        noise units, so only the image's noise matters)."""
        from glmil_auto.preprocessing.foci_channel import foci_channel_and_record

        section = self.config["small_foci"]
        return foci_channel_and_record(images[int(section["reference_channel"])], canonical, brain, mask, target, section)

    # -------------------------------------------------------------- global volume
    def _global_volume(
        self, normalised: np.ndarray, mask: np.ndarray, canonical: Geometry, head: np.ndarray, background: list[float]
    ) -> tuple[np.ndarray, Geometry, list[tuple[int, int]]]:
        plan = self.config["global"]
        box = bounding_box(head)
        centre_index = np.array([(start + stop - 1) / 2.0 for start, stop in box])
        target = grid_centred_on(
            canonical.index_to_world(centre_index), plan["target_spacing"], plan["input_shape"], canonical.direction
        )
        channels = [
            resample_to_grid(normalised[c], canonical, target, order=1, cval=background[c])
            for c in range(normalised.shape[0])
        ]
        channels.append(resample_to_grid(mask.astype(np.float32), canonical, target, order=1, cval=0.0))
        return np.stack(channels), target, box

    # -------------------------------------------------------------- lesion instances
    def _keep(self, lesions: list, case_id: str) -> list[int]:
        """Labels of the kept lesions (the largest ``max_instances``), in label order."""
        limit = self.config["local"]["max_instances"]
        if len(lesions) <= limit:
            return [l.label for l in lesions]
        by_size = sorted(lesions, key=lambda l: (-l.n_voxels, l.label))
        kept = sorted(l.label for l in by_size[:limit])
        dropped = [(l.label, round(l.volume_mm3, 1)) for l in by_size[limit:]]
        logger.warning(
            "case %s has %d lesions, the plans keep %d (largest); dropped (label, volume mm3): %s",
            case_id, len(lesions), limit, dropped,
        )
        return kept

    def _patches(
        self,
        normalised: np.ndarray,
        labelled: np.ndarray,
        lesions: list,
        kept: list[int],
        canonical: Geometry,
        background: list[float],
    ) -> tuple[np.ndarray, list[list[Geometry]]]:
        plan = self.config["local"]
        scales = plan["scales"]
        n_channels = normalised.shape[0] + 1
        out = np.zeros((len(kept), len(scales), n_channels, *plan["patch_size"]), dtype=np.float32)
        by_label = {l.label: l for l in lesions}
        geometries: list[list[Geometry]] = []
        for i, label in enumerate(kept):
            lesion = by_label[label]
            instance_mask = (labelled == label).astype(np.float32)
            per_scale = []
            for s, scale in enumerate(scales):
                target = grid_centred_on(
                    np.asarray(lesion.centroid_world_mm),
                    [sp * scale for sp in plan["target_spacing"]],
                    plan["patch_size"],
                    canonical.direction,
                )
                for c in range(normalised.shape[0]):
                    out[i, s, c] = resample_to_grid(normalised[c], canonical, target, order=1, cval=background[c])
                out[i, s, -1] = resample_to_grid(instance_mask, canonical, target, order=1, cval=0.0)
                per_scale.append(target)
            geometries.append(per_scale)
        return out, geometries
