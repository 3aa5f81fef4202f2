"""The one argument check of the fused per-frame loss terms: the public function runs it (reference and native
backends), the raw Triton ops run it with ``kernel=True``. It reads shapes, dtypes, devices and the Python scalars
only (no device values: no host sync, and it runs on FakeTensors). Errors are ``ValueError``s naming the op, the
argument, what is expected and what was received."""
from __future__ import annotations

import math
import numbers

import torch

from trgnet_fast.ops._checks import (check_contiguous, check_dtype_device, check_floating, check_shape,
                                     check_tensor_arguments, converted_state)
from trgnet_fast.ops.frame_losses.reference import compute_dtype

# the tensor arguments in schema order
TENSOR_NAMES = ("logits", "labels", "ce_weight", "next_frame", "previous_frame", "pair_weight", "boundary_logits",
                "boundary", "boundary_weight", "pos_weight")
# the per-frame (N, T) inputs: int64 indices and labels, weights and targets in the compute dtype
INDEX_NAMES = ("labels", "next_frame", "previous_frame")
WEIGHT_NAMES = ("ce_weight", "pair_weight", "boundary", "boundary_weight")
# the inputs taken in the compute dtype: the per-frame weights and targets, and pos_weight
STATE_NAMES = (*WEIGHT_NAMES, "pos_weight")
# the fused kernels hold one frame's K logits at once
MAX_CLASSES = 1024


def check_argument_types(op: str, tensors, threshold, time_axis) -> None:
    """The cheap part, run before the backend is chosen: tensors where tensors belong, a finite threshold > 0, a
    bool time_axis."""
    check_tensor_arguments(op, tuple(zip(TENSOR_NAMES, tensors)))
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold) \
            or threshold <= 0:
        raise ValueError(f"{op}: threshold: expected a finite float > 0, got {threshold!r}")
    if not isinstance(time_axis, bool):
        raise ValueError(f"{op}: time_axis: expected a bool, got {time_axis!r}")


def in_compute_dtype(op: str, tensors) -> tuple:
    """``tensors`` (schema order) with the floating weights, targets and pos_weight in the compute dtype of the logits
    (``converted_state``)."""
    return converted_state(op, tuple(zip(TENSOR_NAMES, tensors)), STATE_NAMES, compute_dtype)


def validate_inputs(op: str, tensors, threshold, time_axis, kernel: bool = False) -> None:
    """Shapes, dtypes and devices of every argument (package docstring of ``trgnet_fast/ops/frame_losses``) and the
    scalars. ``kernel``: also contiguous tensors and K <= ``MAX_CLASSES``."""
    check_argument_types(op, tensors, threshold, time_axis)
    named = dict(zip(TENSOR_NAMES, tensors))
    logits = named["logits"]
    if logits.dim() != 4:
        raise ValueError(f"{op}: logits: expected a 4-D tensor (S, N, K, T), got shape {tuple(logits.shape)}")
    check_floating(op, "logits", logits)
    _, n, k, t = logits.shape
    acc = compute_dtype(logits.dtype)
    b = named["boundary_logits"]
    if b.dim() != 3 or tuple(b.shape[1:]) != (n, t):
        raise ValueError(f"{op}: boundary_logits: expected shape (R, N, T) = (R, {n}, {t}), got {tuple(b.shape)}")
    check_dtype_device(op, "boundary_logits", b, logits.dtype, "logits", logits)
    for name in INDEX_NAMES:
        check_shape(op, name, named[name], (n, t), "(N, T)")
        check_dtype_device(op, name, named[name], torch.int64, "logits", logits, "int64")
    for name in WEIGHT_NAMES:
        check_shape(op, name, named[name], (n, t), "(N, T)")
        check_dtype_device(op, name, named[name], acc, "logits", logits, f"the compute dtype of {logits.dtype} logits")
    check_shape(op, "pos_weight", named["pos_weight"], (1,), "(1,)")
    check_dtype_device(op, "pos_weight", named["pos_weight"], acc, "logits", logits,
                       f"the compute dtype of {logits.dtype} logits")
    if kernel:
        if k > MAX_CLASSES:
            raise ValueError(f"{op}: logits: expected at most {MAX_CLASSES} classes for the fused kernels, got K = {k}")
        for name, tensor in named.items():
            check_contiguous(op, name, tensor)


def validate_backward_inputs(op: str, grad_terms, tensors, time_lse, threshold, time_axis) -> None:
    """As ``validate_inputs(kernel=True)``, and grad_terms (3,) in the compute dtype, time_lse (S, N, 2, K)
    (time_axis) or (0,) in the compute dtype, both contiguous."""
    validate_inputs(op, tensors, threshold, time_axis, kernel=True)
    logits = tensors[0]
    s, n, k, _ = logits.shape
    acc = compute_dtype(logits.dtype)
    rule = f"the compute dtype of {logits.dtype} logits"
    check_shape(op, "grad_terms", grad_terms, (3,), "(3,)")
    check_dtype_device(op, "grad_terms", grad_terms, acc, "logits", logits, rule)
    check_contiguous(op, "grad_terms", grad_terms)
    check_shape(op, "time_lse", time_lse, time_lse_shape(s, n, k, time_axis),
                "(S, N, 2, K)" if time_axis else "(0,) without time_axis")
    check_dtype_device(op, "time_lse", time_lse, acc, "logits", logits, rule)
    check_contiguous(op, "time_lse", time_lse)


def time_lse_shape(s: int, n: int, k: int, time_axis: bool) -> tuple[int, ...]:
    """Shape of the forward's second output."""
    return (s, n, 2, k) if time_axis else (0,)
