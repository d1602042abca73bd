"""The head mask, depth map and brain region of one canonical case, stripped or not.

The fingerprint and the case preprocessor both take their regions from :func:`case_regions`, so the
head box the planner sizes the global input from is the box the preprocessor crops to.

- unstripped case (or detection off): the thresholded head mask, the distance below its surface,
  and the head eroded by ``brain_margin_mm`` (:mod:`glmil_auto.imaging.head_mask`), exactly as
  before skull-stripping detection existed;
- skull-stripped case (:mod:`glmil_auto.imaging.skull_stripping`): the nonzero region is both the
  head mask and the brain region (no erosion: there is no scalp or skull left to remove), and the
  depth is the distance below the brain surface plus the scalp-and-skull offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from glmil_auto.imaging.head_mask import brain_region, depth_mm, head_mask
from glmil_auto.imaging.skull_stripping import (
    SCALP_AND_SKULL_MM,
    SkullStrippingCheck,
    detect_skull_stripping,
    stripped_depth_mm,
)


@dataclass
class CaseRegions:
    head: np.ndarray  # bool (Z, Y, X): the global crop's box and the background (outside) for padding
    depth: np.ndarray  # float64 (Z, Y, X), mm below the head surface (0 outside)
    brain: np.ndarray  # bool (Z, Y, X): where MRI channels are z-scored
    check: SkullStrippingCheck | None  # None when detection was not asked for

    @property
    def skull_stripped(self) -> bool | None:
        return None if self.check is None else self.check.skull_stripped


def case_regions(
    images: np.ndarray,
    spacing_zyx: Sequence[float],
    brain_margin_mm: float,
    detect_stripping: bool = True,
    scalp_and_skull_mm: float = SCALP_AND_SKULL_MM,
) -> CaseRegions:
    """Regions of canonical ``(C, Z, Y, X)`` channels; see the module docstring."""
    check = None
    if detect_stripping:
        check, region = detect_skull_stripping(images, spacing_zyx)
        if check.skull_stripped:
            return CaseRegions(region, stripped_depth_mm(region, spacing_zyx, scalp_and_skull_mm), region.copy(), check)
    head = head_mask(images)
    depth = depth_mm(head, spacing_zyx)
    return CaseRegions(head, depth, brain_region(head, spacing_zyx, brain_margin_mm, depth=depth), check)
