"""The measured peak memory of a piece of work, on CUDA or on the CPU.

CUDA: ``torch.cuda.max_memory_allocated`` (reset before), the peak of everything torch holds on
the device. CPU: torch's CPU allocator has no peak counter, so the profiler records every
allocation and free (``profile_memory=True``) and the peak of their running sum is taken; tensors
allocated before the work (weights, a batch already in memory) are not seen and are added by the
caller. Used by the trainer to log the planner's estimate against reality, and by the tests that
check the estimate.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def cpu_allocation_peak(run: Callable[[], T]) -> tuple[T, int]:
    """``(run(), peak bytes allocated on the CPU during it above the level at its start)``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        result = run()
    events = [(e.start_ns(), e.nbytes()) for e in profiler.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda event: event[0])
    level = peak = 0
    for _, change in events:
        level += change
        peak = max(peak, level)
    return result, int(peak)


def cuda_allocation_peak(run: Callable[[], T], device: torch.device) -> tuple[T, int]:
    """``(run(), torch.cuda.max_memory_allocated during it)``: absolute, weights included."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = run()
    torch.cuda.synchronize(device)
    return result, int(torch.cuda.max_memory_allocated(device))
