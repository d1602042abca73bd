"""Centre (scanner) profiles and the size argument.

A centre fixes how a case is *imaged* (grid, orientation, intensity scale, bias field, noise,
lesion contrast) and, for the external centre, a shifted case mix. Training centres are drawn
in order from ``TRAINING_PROFILES``; the external (held-out) centre always uses
``EXTERNAL_PROFILE`` and is named last (``C{n_centres}``).

Size: the full-size cohort uses each centre's nominal spacing. A *spacing factor* f > 1 keeps
the field of view, the anatomy and every lesion in mm, and multiplies all spacings by f, so the
grid has about f**3 fewer voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SIZE_PRESETS: dict[str, float] = {"full": 1.0, "demo": 2.5, "small": 2.0, "tiny": 4.0}


def _rotation_x(degrees: float) -> tuple[float, ...]:
    a = math.radians(degrees)
    m = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])
    return tuple(float(v) for v in m.flatten())


@dataclass(frozen=True)
class CentreProfile:
    """How one scanner images a case. Spacing, FOV and direction refer to image axes (x, y, z);
    ``direction`` is row-major 3x3 (SimpleITK convention: column k is image axis k in LPS)."""

    key: str
    description: str
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    fov_mm: tuple[float, float, float]
    t1c_scale: float
    t1c_offset: float
    flair_scale: float
    flair_offset: float
    bias_strength: float  # standard deviation of the log bias field
    noise: float  # Rician noise sigma as a fraction of white-matter signal
    lesion_contrast: float  # multiplies the enhancement of lesions and micro-lesions
    quantum: float = 1.0  # stored values are multiples of this (integers for most scanners)
    age_shift: float = 0.0  # case mix: years added to the age distribution
    kps_shift: float = 0.0  # case mix: shift of the latent KPS score (negative = sicker)
    primary_weights: tuple[tuple[str, float], ...] = field(default_factory=tuple)  # multipliers

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "description": self.description,
            "spacing": list(self.spacing),
            "direction": list(self.direction),
            "fov_mm": list(self.fov_mm),
            "t1c_scale": self.t1c_scale,
            "t1c_offset": self.t1c_offset,
            "flair_scale": self.flair_scale,
            "flair_offset": self.flair_offset,
            "bias_strength": self.bias_strength,
            "noise": self.noise,
            "lesion_contrast": self.lesion_contrast,
            "quantum": self.quantum,
            "age_shift": self.age_shift,
            "kps_shift": self.kps_shift,
            "primary_weights": dict(self.primary_weights),
        }


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FOV = (200.0, 240.0, 190.0)

TRAINING_PROFILES: tuple[CentreProfile, ...] = (
    CentreProfile(
        key="ge15_spgr_iso1",
        description="1.5 T 3D SPGR research protocol, 1 mm isotropic, axial, LPS identity",
        spacing=(1.0, 1.0, 1.0),
        direction=IDENTITY,
        fov_mm=FOV,
        t1c_scale=420.0, t1c_offset=0.0, flair_scale=310.0, flair_offset=0.0,
        bias_strength=0.10, noise=0.030, lesion_contrast=1.0,
    ),
    CentreProfile(
        key="siemens3t_mprage_ras",
        description="3 T MPRAGE, 0.9x0.9x1.5 mm, axial stored in RAS order (x and y flipped)",
        spacing=(0.9, 0.9, 1.5),
        direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
        fov_mm=FOV,
        t1c_scale=2600.0, t1c_offset=60.0, flair_scale=1800.0, flair_offset=25.0,
        bias_strength=0.22, noise=0.025, lesion_contrast=0.9,
    ),
    CentreProfile(
        key="philips3t_oblique",
        description="3 T TFE, 0.8x0.8x2.0 mm, oblique axial (12 degrees about x, AC-PC aligned), float",
        spacing=(0.8, 0.8, 2.0),
        direction=_rotation_x(12.0),
        fov_mm=FOV,
        t1c_scale=1.0, t1c_offset=0.0, flair_scale=0.8, flair_offset=0.0,
        bias_strength=0.18, noise=0.040, lesion_contrast=1.15, quantum=2.0**-12,
    ),
    CentreProfile(
        key="ge3t_bravo",
        description="3 T BRAVO, 0.94x0.94x1.2 mm, axial flipped in z",
        spacing=(0.94, 0.94, 1.2),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        fov_mm=FOV,
        t1c_scale=900.0, t1c_offset=10.0, flair_scale=700.0, flair_offset=0.0,
        bias_strength=0.20, noise=0.030, lesion_contrast=1.05,
    ),
    CentreProfile(
        key="siemens15_spinecho",
        description="1.5 T 2D spin echo, 0.7x0.7x4.0 mm axial slices",
        spacing=(0.7, 0.7, 4.0),
        direction=IDENTITY,
        fov_mm=FOV,
        t1c_scale=1500.0, t1c_offset=0.0, flair_scale=1200.0, flair_offset=0.0,
        bias_strength=0.12, noise=0.045, lesion_contrast=0.95,
    ),
)

# Sagittal 2D acquisition: image x runs posterior->anterior, image y superior->inferior,
# image z (the 3 mm slice axis) left-right. Older scanner, 16-bit-like intensity range, lower
# lesion contrast, and a referral case mix (older, sicker, more melanoma and renal cancer).
EXTERNAL_PROFILE = CentreProfile(
    key="external_sagittal_3mm",
    description="external 1.5 T, 2D sagittal 1.0x1.0x3.0 mm, permuted axes, 16-bit range",
    spacing=(1.0, 1.0, 3.0),
    direction=(0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    fov_mm=(240.0, 190.0, 200.0),
    t1c_scale=32000.0, t1c_offset=1000.0, flair_scale=21000.0, flair_offset=500.0,
    bias_strength=0.15, noise=0.050, lesion_contrast=0.8,
    age_shift=5.0, kps_shift=-0.3,
    primary_weights=(("lung", 0.8), ("melanoma", 2.0), ("renal", 1.5)),
)

MAX_CENTRES = len(TRAINING_PROFILES) + 1


def centre_profiles(n_centres: int, with_external: bool = True) -> list[tuple[str, CentreProfile]]:
    """``[(name, profile), ...]`` for ``C1..Cn``; with ``with_external`` the last is external."""
    n_train = n_centres - 1 if with_external else n_centres
    if n_train < 1 or n_train > len(TRAINING_PROFILES):
        raise ValueError(
            f"n_centres={n_centres} is out of range: need 1..{len(TRAINING_PROFILES)} training centres"
            + (" plus the external one" if with_external else "")
        )
    out = [(f"C{i + 1}", TRAINING_PROFILES[i]) for i in range(n_train)]
    if with_external:
        out.append((f"C{n_centres}", EXTERNAL_PROFILE))
    return out


def resolve_spacing_factor(size: str | float) -> float:
    """``size`` is a preset name (``full``, ``small``, ``demo``, ``tiny``) or a spacing factor >= 0.5."""
    if isinstance(size, str):
        try:
            return SIZE_PRESETS[size]
        except KeyError:
            try:
                size = float(size)
            except ValueError:
                raise ValueError(f"unknown size {size!r}: use one of {sorted(SIZE_PRESETS)} or a number") from None
    factor = float(size)
    if not factor >= 0.5:
        raise ValueError(f"spacing factor must be >= 0.5, got {factor}")
    return factor


def grid_spacing(profile: CentreProfile, factor: float) -> tuple[float, float, float]:
    return tuple(round(float(s * factor), 6) for s in profile.spacing)


def grid_shape_xyz(profile: CentreProfile, factor: float) -> tuple[int, int, int]:
    """Number of voxels along image x, y, z (the FOV is fixed in mm)."""
    return tuple(int(math.ceil(f / s)) for f, s in zip(profile.fov_mm, grid_spacing(profile, factor)))
