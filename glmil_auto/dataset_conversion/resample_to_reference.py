"""Resample a channel or a mask onto a reference image's grid (SimpleITK, identity transform).

Real FLAIR and T1c series of one study rarely share a grid (different slice thickness, field of
view, orientation) although they share the scanner's frame of reference. The raw contract needs
one grid per case, so every channel and the mask are resampled onto the reference channel's
grid in world coordinates; nothing is registered here (the images must already be aligned in
physical space, as series of one session are).

Channels: linear (default) or B-spline interpolation, output float32, background 0 outside the
source's field of view; a channel already on the grid is passed through unchanged. B-spline can overshoot at edges (a little ringing); linear never leaves
the range of its inputs. Masks: nearest neighbour, so the output holds only the source's label
values (no new values from interpolation), stored with the source's integer pixel type.
"""

from __future__ import annotations

import SimpleITK as sitk

from glmil_auto.dataset.image_io import Geometry, geometry_mismatches

INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}


def same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    """True when ``image`` is on ``reference``'s grid within the raw-contract tolerances."""
    return not geometry_mismatches(Geometry.from_image(reference), Geometry.from_image(image))


def resample_channel(image: sitk.Image, reference: sitk.Image, interpolation: str = "linear",
                     default_value: float = 0.0) -> sitk.Image:
    """``image`` on ``reference``'s grid as float32 (``interpolation``: linear | bspline | nearest).

    An image already on the grid (within the raw contract's tolerances) is not interpolated: it is
    returned with its voxels and pixel type unchanged and the reference's exact geometry (float32
    header rounding removed).
    """
    if interpolation not in INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATORS)}, got {interpolation!r}")
    if same_grid(image, reference):
        image = sitk.Image(image)
        image.CopyInformation(reference)
        return image
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(),
                         INTERPOLATORS[interpolation], float(default_value), sitk.sitkFloat32)


def resample_mask(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """``mask`` on ``reference``'s grid by nearest neighbour: label values are kept exactly
    (voxels outside the mask's field of view become 0, the background)."""
    if mask.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        mask = sitk.Cast(sitk.Round(mask), sitk.sitkInt32)
    if same_grid(mask, reference):
        mask = sitk.Image(mask)
        mask.CopyInformation(reference)
        return mask
    return sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())


def to_reference_grid(images: list[sitk.Image], mask: sitk.Image, reference_index: int = 0,
                      interpolation: str = "linear") -> tuple[list[sitk.Image], sitk.Image]:
    """Every channel and the mask of one case on the grid of ``images[reference_index]``.

    The reference channel and any channel already on its grid keep their voxels and pixel type;
    resampled channels become float32.
    """
    reference = images[reference_index]
    out = [image if i == reference_index else resample_channel(image, reference, interpolation)
           for i, image in enumerate(images)]
    return out, resample_mask(mask, reference)
