"""Turn the selected structures' masks into the raw contract's lesion mask (label 1).

Each selected structure is one lesion, but the raw contract finds lesions as 26-connected
components of the lesion mask, so two structures that touch (or overlap) would merge into one
instance. :func:`lesion_mask` therefore keeps structures apart: a voxel claimed by two structures
goes to the first (ROI order), and the voxels of a later structure that touch an earlier one
(26-neighbourhood) are cleared, leaving a one-voxel gap. A structure that would vanish entirely
that way is kept whole, joining the one structure it touches (reported), unless it touches two or
more: then it is left out, since it would bridge separate lesions into one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from scipy.ndimage import binary_dilation

_CUBE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class LesionMask:
    """The label-1 mask plus what was done to keep structures apart."""

    mask: np.ndarray  # (Z, Y, X) uint8, values 0 and 1
    voxels: dict[str, int] = field(default_factory=dict)  # structure -> voxels kept
    notes: list[str] = field(default_factory=list)
    # (Z, Y, X) int32: which structure keeps each voxel, 1-based in ``names`` order (0: none)
    owner: np.ndarray | None = None
    names: list[str] = field(default_factory=list)


class _NamedRoi(Protocol):
    name: str
    number: int


def structure_mask_names(structures: Sequence[_NamedRoi]) -> list[str]:
    """The key of each structure in :func:`lesion_mask`'s input (and in the conversion log): its
    ROI name, or ``"<name> (ROI <number>)"`` for a later structure with a name already used."""
    names: list[str] = []
    for structure in structures:
        names.append(structure.name if structure.name not in names else f"{structure.name} (ROI {structure.number})")
    return names


def lesion_mask(structures: dict[str, np.ndarray]) -> LesionMask:
    """Combine ``name -> (Z, Y, X) bool`` masks (in ROI order) into one label-1 mask whose
    26-connected components do not join two structures."""
    names = list(structures)
    if not names:
        raise ValueError("no structure to combine")
    shape = structures[names[0]].shape
    claimed = np.zeros(shape, dtype=bool)
    owner = np.zeros(shape, dtype=np.int32)  # which structure (1-based) holds each voxel
    out = LesionMask(np.zeros(shape, dtype=np.uint8), owner=owner, names=names)
    for number, name in enumerate(names, start=1):
        own = structures[name] & ~claimed
        if structures[name].any() and (structures[name] & claimed).any():
            out.notes.append(f"structure '{name}' overlaps an earlier selected structure (the shared voxels "
                             "stay with the earlier one; does the regular expression select both a GTV and "
                             "its PTV?)")
        if claimed.any() and own.any():
            separated = own & ~binary_dilation(claimed, structure=_CUBE)
            if separated.any():
                if separated.sum() != own.sum():
                    out.notes.append(f"structure '{name}' touches an earlier structure: "
                                     f"{int(own.sum() - separated.sum())} voxel(s) cleared to keep them apart")
                own = separated
            else:
                touched = set(np.unique(owner[binary_dilation(own, structure=_CUBE)]).tolist()) - {0}
                if len(touched) > 1:
                    out.notes.append(f"structure '{name}' lies entirely next to {len(touched)} earlier structures "
                                     "and is left out (it would join them into one lesion)")
                    own = np.zeros(shape, dtype=bool)
                else:
                    out.notes.append(f"structure '{name}' lies entirely next to an earlier structure and is kept "
                                     "touching it (they will form one lesion instance)")
        if not structures[name].any():
            out.notes.append(f"structure '{name}' has no voxel on the reference grid")
        claimed |= own
        owner[own] = number
        out.voxels[name] = int(own.sum())
    out.mask[claimed] = 1
    return out
