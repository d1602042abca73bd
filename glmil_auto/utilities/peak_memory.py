"""The measured peak memory of a piece of work, on CUDA or on the CPU.

CUDA: ``torch.cuda.max_memory_allocated`` (reset before), the peak of everything torch holds on
the device. CPU: torch's CPU allocator has no peak counter, so the profiler records every
allocation and free (``profile_memory=True``) and the peak of their running sum is taken; tensors
allocated before the work (weights, a batch already in memory) are not seen and are added by the
caller. Used by the trainer to log the planner's estimate against reality, and by the tests that
check the estimate.

The profiler's native code writes to the process's standard error on every use (kineto's
``profiler_start`` / ``profiler_stop`` stage lines, and the CPU allocator's "Memory block of unknown
size" warning for every tensor allocated before the measurement and freed during it). Neither says
anything to a user, and neither can be switched off from Python once torch is loaded, so
:func:`cpu_allocation_peak` sends file descriptor 2 to a temporary file while it measures and then
writes back every line that is not one of these (:data:`PROFILER_NOISE`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")
PROFILER_NOISE = re.compile(r"^(USDT|STAGE):.*(ActivityProfiler|profiler_st)|CPUAllocator\.cpp.*Memory block of unknown size")


@contextlib.contextmanager
def _without_profiler_noise() -> Iterator[None]:
    """Hold back the native standard error while the body runs, then pass on all but the profiler's
    noise (see the module docstring). Python's own ``sys.stderr`` is flushed first, so that nothing
    written before is reordered."""
    fd = 2  # native code writes to descriptor 2 whatever Python's sys.stderr is
    if sys.stderr is not None:
        sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        finally:
            try:
                if sys.stderr is not None:
                    sys.stderr.flush()
            finally:
                os.dup2(saved, fd)
                os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not PROFILER_NOISE.search(line)]
            if kept:
                os.write(fd, "".join(kept).encode())


def cpu_allocation_peak(run: Callable[[], T]) -> tuple[T, int]:
    """``(run(), peak bytes allocated on the CPU during it above the level at its start)``."""
    from torch.profiler import ProfilerActivity, profile

    with _without_profiler_noise(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
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
