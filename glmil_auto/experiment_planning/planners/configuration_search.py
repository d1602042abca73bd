"""The memory trade-off of the planner: the finest configuration that fits, in a documented order.

A :class:`Configuration` holds every knob that costs training memory. :func:`degradation_ladder`
lists configurations from the most to the least wanted, each one giving up a little of the
least important knob that is still above its floor (the order is the planner's priorities, see
documentation/planning.md); :func:`first_that_fits` walks the ladder and returns the first
configuration whose smallest batch fits the budget. Because every device walks the same ladder, a
larger budget stops earlier on it and never gets a coarser configuration than a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator


@dataclass(frozen=True)
class Configuration:
    global_spacing: float  # isotropic mm
    first_stride: int  # of the global encoder's first stage
    local_coarsening: float  # factor on the high-resolution lesion spacing (the field of view is kept)
    field_of_view_mm: float  # of scale 1
    scales: tuple[float, ...]
    instance_mode: str  # rules.instances_per_batch mode: p95, median, one
    min_batch_size: int
    step: str  # what this rung gave up (for the plans' estimates and the log)


@dataclass(frozen=True)
class LadderLimits:
    """The floors of every knob and the step sizes (all from the planner's attributes)."""

    global_spacing_floor: float  # the finest global spacing compute allows
    global_spacing_bound: float | None  # the smallest-lesion bound
    global_spacing_ceiling: float  # the coarsest global spacing tried before giving up
    local_coarsening_ceiling: float
    field_of_view_floor_mm: float
    preferred_min_batch: int
    step_factor: float = 1.1


def _geometric(start: float, stop: float, factor: float) -> Iterator[float]:
    """start*factor, start*factor^2, ... below stop, then stop (nothing when start >= stop)."""
    value = start
    while value * factor < stop - 1e-9:
        value *= factor
        yield round(value, 4)
    if start < stop - 1e-9:
        yield round(stop, 4)


def degradation_ladder(start: Configuration, limits: LadderLimits, allow_first_stride_2: bool) -> Iterator[Configuration]:
    """Configurations in the order of the planner's priorities (the first is ``start``):

    1. global spacing finer than the smallest-lesion bound (a luxury) coarsens to the bound;
    2. the global encoder's first stage halves the grid (its kernels still read every input voxel,
       and the full-resolution stage holds most of the global branch's activations);
    3. the instance budget drops from the 95th percentile of a batch to the mean bag;
    4. context scales are dropped, widest first (down to one);
    5. the lesion patch is coarsened in 10 % steps (its field of view is kept);
    6. one lesion per bag (the largest);
    7. the batch drops below the preferred minimum (4) to 2, then 1 (the Cox loss keeps a memory of
       recent risks, so small batches still see risk sets with events);
    8. the patch field of view shrinks in 10 % steps down to the median lesion;
    9. the global spacing coarsens beyond the smallest-lesion bound.
    """
    c = start
    yield c
    bound = limits.global_spacing_bound
    if bound is not None and c.global_spacing < bound:
        for spacing in _geometric(c.global_spacing, bound, limits.step_factor):
            c = replace(c, global_spacing=spacing, step="global spacing towards the smallest-lesion bound")
            yield c
    if allow_first_stride_2 and c.first_stride == 1:
        c = replace(c, first_stride=2, step="global first stage strided")
        yield c
    c = replace(c, instance_mode="median", step="instance budget: the mean bag")
    yield c
    while len(c.scales) > 1:
        c = replace(c, scales=c.scales[:-1], step="widest context scale dropped")
        yield c
    for coarsening in _geometric(c.local_coarsening, limits.local_coarsening_ceiling, limits.step_factor):
        c = replace(c, local_coarsening=coarsening, step="lesion patch coarsened")
        yield c
    c = replace(c, instance_mode="one", step="one lesion per bag")
    yield c
    for batch in (2, 1):
        if batch < c.min_batch_size:
            c = replace(c, min_batch_size=batch, step=f"batch below {limits.preferred_min_batch}")
            yield c
    fov = c.field_of_view_mm
    while fov / limits.step_factor >= limits.field_of_view_floor_mm:
        fov = round(fov / limits.step_factor, 2)
        c = replace(c, field_of_view_mm=fov, step="patch field of view shrunk")
        yield c
    for spacing in _geometric(c.global_spacing, limits.global_spacing_ceiling, limits.step_factor):
        c = replace(c, global_spacing=spacing, step="global spacing beyond the smallest-lesion bound")
        yield c


def first_that_fits(ladder: Iterator[Configuration], fits: Callable[[Configuration, int], bool]
                    ) -> tuple[Configuration | None, Configuration | None]:
    """``(the first configuration whose min_batch_size fits, the last one tried)``."""
    last = None
    for configuration in ladder:
        last = configuration
        if fits(configuration, configuration.min_batch_size):
            return configuration, last
    return None, last
