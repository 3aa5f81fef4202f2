"""Input checks shared by the fused ops' validation functions (``trgnet_fast/ops/<op>/validation.py``) (``ValueError`` naming the op
and argument, what is expected and what was received; the wording of csrc/checks.h)."""
from __future__ import annotations

import math
import numbers

import torch
from torch._subclasses.fake_tensor import is_fake

from trgnet_fast.backend import triton_interpreting

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
    """Every ``(name, value)`` of ``named`` is a tensor; the first is 4-D (``layout``) of a supported floating
    dtype."""
    check_tensor_arguments(op, named)
    name, first = named[0]
    if first.dim() != 4:
        raise ValueError(f"{op}: {name}: expected a 4-D tensor {layout}, got shape {shape_of(first)}")
    check_floating(op, name, first)


def check_floating(op: str, name: str, t: torch.Tensor) -> None:
    """t is floating (named apart from the other dtypes) and of a supported dtype: no backend computes the rest
    (float8 among them)."""
    if not t.dtype.is_floating_point:
        raise ValueError(f"{op}: {name}: expected a floating dtype, got {t.dtype}")
    check_supported_float(op, name, t)


def converted_state(op: str, named, state_names, compute_dtype) -> tuple:
    """The tensors of ``named`` ((name, tensor) pairs in schema order, the leading floating input first) with those
    named in ``state_names`` converted to ``compute_dtype(leading dtype)``: the public functions take them in any
    supported floating dtype, the raw ops in the compute dtype. One that is not of a supported floating dtype is
    refused here, naming it. Unchanged when the leading input is not of a supported floating dtype (refused later,
    naming it)."""
    lead = named[0][1]
    if lead.dtype not in SUPPORTED_FLOAT_DTYPES:
        return tuple(t for _, t in named)
    acc = compute_dtype(lead.dtype)
    converted = []
    for name, t in named:
        if name in state_names:
            check_floating(op, name, t)
            t = t.to(acc)
        converted.append(t)
    return tuple(converted)


def check_nonempty(op: str, named) -> None:
    """No tensor of ``named`` ((name, tensor, layout) triples, layout naming the dimensions, e.g. "(N, C, T)") has a
    zero-size dimension. Run by the public functions before the backend is chosen, so that every backend refuses an
    empty input alike (the raw ops keep their own handling of empty sizes)."""
    for name, t, layout in named:
        dims = layout.strip("(,)").split(", ")
        for i, size in enumerate(t.shape):
            if size == 0:
                dim = dims[i] if len(dims) == t.dim() else f"dim {i}"
                raise ValueError(f"{op}: {name}: expected {dim} >= 1 (no empty dimension of {layout}), got shape "
                                 f"{shape_of(t)}")


def check_positive_float(op: str, name: str, value) -> None:
    """value is a finite real number > 0 (an epsilon that keeps a denominator away from zero)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{op}: {name}: expected a finite float > 0, got {value!r}")


def check_backend_dtype(backend: str, device: torch.device, dtype: torch.dtype, where: str = "") -> None:
    """Refuse what would give wrong numbers silently: Triton's CPU interpreter computes bfloat16 wrongly (numpy has
    no bfloat16; docs/architecture.md#triton-interpreter). ``where`` prefixes the message (the op and argument).
    Without the interpreter, nothing runs Triton on CPU tensors but an offline compile (benchmarks/kernel_report.py)."""
    if backend == "triton" and device.type == "cpu" and dtype == torch.bfloat16 and triton_interpreting():
        raise ValueError(f"{where}backend 'triton' on CPU (Triton's interpreter) cannot run bfloat16: it returns "
                         "wrong numbers; use backend 'cuda' or 'torch' for bfloat16 on a CPU, or run Triton on a GPU")


def check_triton_tensor(op: str, name: str, t: torch.Tensor) -> None:
    """What the Triton kernels can run on: a CUDA tensor, or a CPU tensor (under ``TRITON_INTERPRET=1``) of any
    supported dtype but bfloat16 (``check_backend_dtype``). Called by the Triton ops on their first tensor."""
    if t.device.type not in ("cuda", "cpu"):
        raise ValueError(f"{op}: {name}: triton cannot run on device {t.device.type}: expected a CUDA tensor, or a CPU "
                         "tensor under TRITON_INTERPRET=1")
    check_backend_dtype("triton", t.device, t.dtype, f"{op}: {name}: ")


def check_one_device(op: str, names, args) -> None:
    """Every tensor of ``args`` (a raw op's positional arguments, named by ``names``; None and scalars skipped) is on
    the device of the first: the fake kernels' check, so that a raw call mixing ``meta`` and real tensors fails
    instead of returning uninitialised memory."""
    tensors = [(name, t) for name, t in zip(names, args) if isinstance(t, torch.Tensor)]
    first_name, first = tensors[0]
    for name, t in tensors[1:]:
        if t.device != first.device:
            raise ValueError(f"{op}: {name}: expected device {first.device} (same as {first_name}), got {t.device}")


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
        # the values are read on the CPU only: on a GPU that would be a host sync (the model builds them itself,
        # trgnet_fast/model/masking.py sequence_offsets)
        if cu_seqlens.device.type == "cpu" and not is_fake(cu_seqlens) and not torch.compiler.is_compiling():
            check_offset_values(op, cu_seqlens.tolist(), padded_rows=b == n, t=t)
        named.append(("cu_seqlens", cu_seqlens))
    return named


def check_offset_values(op: str, offsets: list, padded_rows: bool, t: int) -> None:
    """cu_seqlens ``offsets`` start at 0 and do not decrease; with ``padded_rows`` each sequence fits its row of
    ``t`` frames, packed (one row) they all fit it together."""
    lengths = [hi - lo for lo, hi in zip(offsets, offsets[1:])]
    if offsets[0] != 0 or min(lengths) < 0:
        raise ValueError(f"{op}: cu_seqlens: expected non-decreasing offsets starting at 0, got {offsets[:8]}")
    longest = max(lengths) if padded_rows else offsets[-1]
    if longest > t:
        layout = "a row's sequence" if padded_rows else "the packed sequences"
        raise ValueError(f"{op}: cu_seqlens: expected {layout} to fit T = {t} frames, got {longest} frames "
                         f"(offsets {offsets[:8]})")


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


def check_layer_input(op: str, x, name: str = "x") -> None:
    """x (argument ``name``) of a (B, C, T) layer op: 3-D, of a supported floating dtype."""
    if x.dim() != 3:
        raise ValueError(f"{op}: {name}: expected a 3-D tensor (B, C, T), got shape {shape_of(x)}")
    check_floating(op, name, x)
