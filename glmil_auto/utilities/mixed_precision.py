"""One rule for mixed precision, shared by training, validation and prediction.

On CUDA: bfloat16 where the GPU supports it (same exponent range as float32, so no loss scaling),
else float16 (with the trainer's GradScaler). Off the GPU, autocast is disabled: CPU training
runs in float32.
"""

from __future__ import annotations

import torch


def uses_amp(device: torch.device) -> bool:
    return device.type == "cuda"


def autocast_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device) -> torch.autocast:
    """The autocast context for a forward pass on ``device`` (disabled off CUDA)."""
    return torch.autocast(device.type, dtype=autocast_dtype(device), enabled=uses_amp(device))


def needs_grad_scaler(device: torch.device) -> bool:
    """float16 autocast needs loss scaling; bfloat16 and float32 do not."""
    return uses_amp(device) and autocast_dtype(device) == torch.float16


def mixed_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The low-precision dtype of training on ``device``; ``None`` where training runs in float32
    (the memory measurement emulates autocast with it)."""
    return autocast_dtype(device) if uses_amp(device) else None


