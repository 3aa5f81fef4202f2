"""The one argument check of the linear attention: the public function runs it (reference and native
backends), the raw Triton ops run it with ``kernel=True`` (adding what their kernels index: contiguous
tensors). It reads shapes, dtypes and devices only, so it also runs on the FakeTensors
of torch.compile. Errors are ``ValueError``s naming the op, the argument, what is expected and what was
received."""
from __future__ import annotations

import torch

from trgnet_fast.ops._checks import (
    check_contiguous, check_dtype_device, check_leading_tensor, check_positive_float, check_same_dtype_device,
    check_shape, check_tensor_arguments, shape_of)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the saved state (kv_state, key_sum): float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_argument_types(op: str, q, k, v, key_mask=None, eps: float = 1e-6) -> None:
    """The cheap part, run before the backend is chosen: q, k, v tensors, key_mask a tensor or None, eps a
    finite Python number > 0 (it keeps the denominator phi(q) . (key sum + eps) away from 0 when every key of a
    sample is masked)."""
    check_tensor_arguments(op, (("q", q), ("k", k), ("v", v)))
    if key_mask is not None and not isinstance(key_mask, torch.Tensor):
        raise ValueError(f"{op}: key_mask: expected a bool tensor (N, T) or None, got {type(key_mask).__name__}")
    check_positive_float(op, "eps", eps)


def validate_inputs(op: str, q, k, v, key_mask=None, eps: float = 1e-6, kernel: bool = False) -> None:
    """q, k (N, T, H, D), v (N, T, H, E) of one floating dtype and device; key_mask None or (N, T) bool on
    that device; eps a finite Python number > 0. ``kernel``: also contiguous tensors."""
    check_argument_types(op, q, k, v, key_mask, eps)
    named = (("q", q), ("k", k), ("v", v))
    check_leading_tensor(op, named, "(N, T, H, D)")
    N, T, H, D = q.shape
    if k.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"{op}: k: expected shape (N, T, H, D) = {shape_of(q)} like q, got {shape_of(k)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{op}: v: expected shape (N, T, H, E) with (N, T, H) = {(N, T, H)} like q, "
                         f"got {shape_of(v)}")
    check_same_dtype_device(op, named)
    if key_mask is not None:
        check_shape(op, "key_mask", key_mask, (N, T), "(N, T)")
        check_dtype_device(op, "key_mask", key_mask, torch.bool, "q", q, "a bool mask, True = valid frame")
    if kernel:
        for name, t in named + ((("key_mask", key_mask),) if key_mask is not None else ()):
            check_contiguous(op, name, t)


def validate_backward_inputs(op: str, grad_out, q, k, v, key_mask, kv_state, key_sum, eps) -> None:
    """As ``validate_inputs(kernel=True)``, and grad_out (N, T, H, E) like v; kv_state (N, H, D, E) and key_sum
    (N, H, D) in the state dtype, all contiguous."""
    validate_inputs(op, q, k, v, key_mask, eps, kernel=True)
    N, T, H, D = q.shape
    E = v.shape[3]
    check_shape(op, "grad_out", grad_out, v.shape, "(N, T, H, E) of the output")
    check_dtype_device(op, "grad_out", grad_out, q.dtype, "q", q)
    check_contiguous(op, "grad_out", grad_out)
    for name, t, shape, layout in (("kv_state", kv_state, (N, H, D, E), "(N, H, D, E)"),
                                   ("key_sum", key_sum, (N, H, D), "(N, H, D)")):
        check_shape(op, name, t, shape, layout)
        check_dtype_device(op, name, t, state_dtype(q.dtype), "q", q, "float64 for float64 inputs, else float32")
        check_contiguous(op, name, t)
