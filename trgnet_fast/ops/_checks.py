"""Input checks shared by the fused ops' Python wrappers (``ValueError`` naming the op and argument,
what is expected and what was received)."""
from __future__ import annotations

import torch


def shape_of(t) -> tuple:
    return tuple(t.shape)


def check_leading_tensor(op: str, named, layout: str) -> None:
    """Every ``(name, value)`` of ``named`` is a tensor; the first is 4-D (``layout``) and floating."""
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name}: expected a torch.Tensor, got {type(t).__name__}")
    name, first = named[0]
    if first.dim() != 4:
        raise ValueError(f"{op}: {name}: expected a 4-D tensor {layout}, got shape {shape_of(first)}")
    if not first.dtype.is_floating_point:
        raise ValueError(f"{op}: {name}: expected a floating dtype, got {first.dtype}")


def check_same_dtype_device(op: str, named) -> None:
    """The tensors of ``named[1:]`` have the dtype and device of ``named[0]``."""
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.dtype != first.dtype:
            raise ValueError(f"{op}: {name}: expected dtype {first.dtype} (same as {first_name}), got {t.dtype}")
        if t.device != first.device:
            raise ValueError(f"{op}: {name}: expected device {first.device} (same as {first_name}), "
                             f"got {t.device}")
