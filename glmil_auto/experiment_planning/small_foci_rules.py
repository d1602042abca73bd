"""What the planner fixes for the small-foci channel (``plans["preprocessing"]["small_foci"]``).

The detector (:mod:`glmil_auto.preprocessing.small_foci`) looks for bright blobs that the lesion
mask leaves out and that the global grid would average away. Its settings follow the dataset:

- **radii**: from half the finest median native voxel edge (a blob smaller than that is below
  the scan's resolution; at least ``MIN_RADIUS_MM``) up to the smallest of the global spacing
  (a blob of that radius spans two global voxels and survives interpolation without help), the
  fingerprint's p05 lesion diameter (the smallest lesions someone contoured; uncontoured foci
  are smaller) and ``MAX_RADIUS_MM`` (a focus of up to 4 mm: the 1-3 mm micro-metastases that go
  uncontoured, with a margin; larger enhancing lesions are what a radiosurgery plan contours, and
  wider filters reach further from every edge), in steps of sqrt(2) (the usual scale-space spacing);
- **lesion margin** and **surface margin**: twice the largest radius. A Laplacian of Gaussian at
  sigma = r / sqrt(3) still responds to an edge about 2 r away; a lesion's enhancing rim is the
  strongest edge in the image, and the brain region's own boundary (where the dura, cortical veins
  and, 10 mm below the head's surface, the inner table of the skull are) is the next one. A margin
  of twice the smallest radius left a shell of edge response along the boundary in every case
  (measured on the foci learning cohort: about 500 global voxels per case, in both classes) and
  skewed each case's noise units;
- **blobness** and **floor**: constants, measured on the synthetic cohort (documentation/preprocessing.md);
- **false positives per case** the per-fold threshold allows (``decoy_threshold``), the number of
  candidates a case keeps in its properties, and the channel's scale.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

MIN_RADIUS_MM = 1.0
MAX_RADIUS_MM = 2.0
RADIUS_STEP = math.sqrt(2.0)
MIN_BLOBNESS = 0.3
FLOOR = 2.5  # noise units: below this a maximum is not recorded at all
FALSE_POSITIVES_PER_CASE = 0.5
MAX_CANDIDATES = 64
CHANNEL_CLIP = 10.0  # noise units above the floor; the channel is (response - floor) clipped, / CHANNEL_SCALE
CHANNEL_SCALE = 2.5


def foci_radii(native_spacing_zyx: list[float], smallest_lesion_diameter_mm: float | None,
               global_spacing_mm: float) -> list[float]:
    """The planned radii (mm), finest first; at least one."""
    smallest = max(MIN_RADIUS_MM, 0.5 * float(min(native_spacing_zyx)))
    largest = min(float(global_spacing_mm), MAX_RADIUS_MM)
    if smallest_lesion_diameter_mm:
        largest = min(largest, float(smallest_lesion_diameter_mm))
    radii = [smallest]
    while radii[-1] * RADIUS_STEP <= largest + 1e-6:
        radii.append(radii[-1] * RADIUS_STEP)
    return [round(r, 3) for r in radii]


def plan_small_foci(summary: Mapping[str, Any], reference_channel: int, global_spacing_mm: float) -> dict[str, Any]:
    """The plans section, from the fingerprint's ``summary`` (median canonical spacing, lesion
    diameters), the T1c channel's index and the global grid's spacing."""
    native = summary.get("spacing_canonical", {}).get("median") or [1.0, 1.0, 1.0]
    diameter = (summary.get("lesion_diameter_mm") or {}).get("percentile_05")
    radii = foci_radii(native, diameter, global_spacing_mm)
    return {
        "reference_channel": int(reference_channel),
        "radii_mm": radii,
        "lesion_margin_mm": round(2.0 * radii[-1], 3),
        "surface_margin_mm": round(2.0 * radii[-1], 3),
        "min_blobness": MIN_BLOBNESS,
        "floor": FLOOR,
        "false_positives_per_case": FALSE_POSITIVES_PER_CASE,
        "max_candidates": MAX_CANDIDATES,
        "channel_clip": CHANNEL_CLIP,
        "channel_scale": CHANNEL_SCALE,
    }
