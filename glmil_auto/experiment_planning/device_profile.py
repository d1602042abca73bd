"""What the planner may spend: the device's memory and compute, detected or given.

A GPU profile budgets its memory; a CPU profile budgets a quarter of the RAM (capped) and is
marked as slow so that the planner also caps the voxel counts and widths: a CPU plan must
train in minutes, a GPU plan may be much larger.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DeviceProfile:
    kind: str  # "cpu" or "cuda"
    name: str
    memory_gb: float  # memory the planner may budget for one training process
    num_cores: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 2**30


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 8.0


def detect_device_profile(device: str | None = None, memory_gb: float | None = None) -> DeviceProfile:
    """The profile of ``device`` (``"cpu"``, ``"cuda"`` or ``None`` = CUDA when available).

    ``memory_gb`` overrides the detected budget (``--device-memory-gb``), for planning on one
    machine for another: ``device="cuda"`` with ``memory_gb`` plans for a GPU of that size on a
    machine without one (as nnU-Net plans for a VRAM target anywhere); nothing here needs the GPU,
    because the planner measures memory on the meta device.
    """
    cores = os.cpu_count() or 1
    if device in (None, "cuda"):
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            total = props.total_memory / 2**30
            return DeviceProfile("cuda", props.name, float(memory_gb if memory_gb is not None else total), cores)
        if device == "cuda":
            if memory_gb is None:
                raise RuntimeError("-device cuda was requested but torch sees no CUDA device: to plan for a GPU of "
                                   "another machine, give its memory with --device-memory-gb G")
            return DeviceProfile("cuda", f"planned for a {memory_gb:g} GiB GPU (none on this machine)",
                                 float(memory_gb), cores)
    budget = memory_gb if memory_gb is not None else min(0.25 * _ram_gb(), 8.0)
    return DeviceProfile("cpu", "cpu", float(budget), cores)
