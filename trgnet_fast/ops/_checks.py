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


def check_sequence_inputs(op: str, x: torch.Tensor, mask, dropout_seed, cu_seqlens, x_name: str = "x") -> list:
    """The inputs of the ops with the AttModule's sequence layouts (``att_module``, ``dilated_residual``), x being
    (B, C, T): mask (B, 1, T) in x's dtype or None, dropout_seed (1,) int64 or None, cu_seqlens (N + 1,) int32 with
    N = B (padded rows) or B = 1 (packed), or None; all on x's device. Returns the (name, tensor) pairs given (for the
    kernels' contiguity check)."""
    b, _, t = x.shape
    named = []
    if mask is not None:
        check_shape(op, "mask", mask, (b, 1, t), "(B, 1, T)")
        check_dtype_device(op, "mask", mask, x.dtype, x_name, x, f"a 0/1 mask in the dtype of {x_name}")
        named.append(("mask", mask))
    if dropout_seed is not None:
        check_shape(op, "dropout_seed", dropout_seed, (1,), "(1,)")
        check_dtype_device(op, "dropout_seed", dropout_seed, torch.int64, x_name, x, "an int64 seed")
    if cu_seqlens is not None:
        if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
            raise ValueError(f"{op}: cu_seqlens: expected a 1-D tensor (N + 1,) with N >= 1, got shape "
                             f"{shape_of(cu_seqlens)}")
        check_dtype_device(op, "cu_seqlens", cu_seqlens, torch.int32, "x", x, "int32 sequence offsets")
        n = cu_seqlens.shape[0] - 1
        if b not in (n, 1):
            raise ValueError(f"{op}: cu_seqlens: expected N + 1 offsets with N = B = {b} (padded rows) or B = 1 "
                             f"(packed), got N = {n} for x of shape {shape_of(x)}")
        named.append(("cu_seqlens", cu_seqlens))
    return named


def check_weights(op: str, x: torch.Tensor, named_weights, shapes, x_name: str = "x") -> list:
    """Each (name, weight) of ``named_weights`` has its shape in ``shapes`` (name -> shape, "for C = ..." in the
    message) and x's dtype and device (x named ``x_name``). Returns the pairs (for the kernels' contiguity check)."""
    c = x.shape[1]
    named = list(named_weights)
    for name, w in named:
        check_shape(op, name, w, shapes[name], f"for C = {c}")
        check_dtype_device(op, name, w, x.dtype, x_name, x)
    return named


def check_kernel_layout(op: str, x: torch.Tensor, named, max_channels: int, x_name: str = "x") -> None:
    """What the tiled kernels of a (B, C, T) op can index: C <= ``max_channels`` and contiguous tensors."""
    c = x.shape[1]
    if c > max_channels:
        raise ValueError(f"{op}: {x_name}: expected at most {max_channels} channels for the fused kernels, got C = {c}")
    for name, tensor in named:
        check_contiguous(op, name, tensor)


def check_layer_input(op: str, x, kernel: bool, name: str = "x") -> None:
    """x (argument ``name``) of a (B, C, T) layer op: 3-D, floating; for the kernels (``kernel``) of a supported
    dtype."""
    if x.dim() != 3:
        raise ValueError(f"{op}: {name}: expected a 3-D tensor (B, C, T), got shape {shape_of(x)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{op}: {name}: expected a floating dtype, got {x.dtype}")
    if kernel:
        check_supported_float(op, name, x)
