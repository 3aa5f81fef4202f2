"""Input checks shared by the fused ops' validation functions (``trgnet_fast/ops/<op>/validation.py``) (``ValueError`` naming the op
and argument, what is expected and what was received; the wording of csrc/checks.h)."""
from __future__ import annotations

import torch

# The dtypes the fused kernels are written for (accumulation in fp32, fp64 for fp64).
SUPPORTED_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def shape_of(t) -> tuple:
    return tuple(t.shape)


def check_tensor_arguments(op: str, named) -> None:
    """Every ``(name, value)`` of ``named`` is a tensor: the cheap part of the checks, run before the backend is
    chosen (from the first tensor's device)."""
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name}: expected a torch.Tensor, got {type(t).__name__}")


def check_leading_tensor(op: str, named, layout: str) -> None:
    """Every ``(name, value)`` of ``named`` is a tensor; the first is 4-D (``layout``) and floating."""
    check_tensor_arguments(op, named)
    name, first = named[0]
    if first.dim() != 4:
        raise ValueError(f"{op}: {name}: expected a 4-D tensor {layout}, got shape {shape_of(first)}")
    if not first.dtype.is_floating_point:
        raise ValueError(f"{op}: {name}: expected a floating dtype, got {first.dtype}")


def check_supported_float(op: str, name: str, t: torch.Tensor) -> None:
    """t has one of ``SUPPORTED_FLOAT_DTYPES``."""
    if t.dtype not in SUPPORTED_FLOAT_DTYPES:
        raise ValueError(f"{op}: {name}: expected dtype float32, float64, float16 or bfloat16, got {t.dtype}")


def check_dtype_device(op: str, name: str, t: torch.Tensor, dtype: torch.dtype, ref_name: str,
                       ref: torch.Tensor, dtype_rule: str | None = None) -> None:
    """t has ``dtype`` (``dtype_rule`` says why; default: that of ``ref``) and the device of ``ref``."""
    if t.dtype != dtype:
        rule = dtype_rule or f"same as {ref_name}"
        raise ValueError(f"{op}: {name}: expected dtype {dtype} ({rule}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{op}: {name}: expected device {ref.device} (same as {ref_name}), got {t.device}")


def check_same_dtype_device(op: str, named) -> None:
    """The tensors of ``named[1:]`` have the dtype and device of ``named[0]``."""
    first_name, first = named[0]
    for name, t in named[1:]:
        check_dtype_device(op, name, t, first.dtype, first_name, first)


def check_shape(op: str, name: str, t: torch.Tensor, expected, layout: str) -> None:
    """t has shape ``expected`` (``layout`` names its dimensions)."""
    if t.shape != expected:
        raise ValueError(f"{op}: {name}: expected shape {layout} = {tuple(expected)}, got {shape_of(t)}")


def check_contiguous(op: str, name: str, t: torch.Tensor) -> None:
    """t is contiguous (kernels that index a flat row-major layout)."""
    if not t.is_contiguous():
        raise ValueError(f"{op}: {name}: expected a contiguous tensor, got shape {shape_of(t)} with strides "
                         f"{t.stride()} (call .contiguous() first)")
