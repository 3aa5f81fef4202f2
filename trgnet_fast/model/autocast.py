"""The fused layers under autocast (docs/training.md#bf16): one dtype for all their tensors."""
from __future__ import annotations

import torch

from trgnet_fast.ops._checks import check_backend_dtype


def fused_dtype(x: torch.Tensor, backend: str) -> torch.dtype:
    """The dtype a fused layer op on ``backend`` runs in for activation x: autocast's dtype where autocast is on for
    x's device (the op is autocast's kind of work: matmuls and convolutions), else x's dtype
    (checked by ``trgnet_fast.ops._checks.check_backend_dtype``)."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    check_backend_dtype(backend, x.device, dtype)
    return dtype


def cast_all(dtype: torch.dtype, *tensors):
    """Each tensor (or None) in ``dtype``: a differentiable cast, so that gradients reach the float32 master weights;
    a no-op (nothing dispatched) for tensors already in it."""
    return [t if t is None else t.to(dtype) for t in tensors]
