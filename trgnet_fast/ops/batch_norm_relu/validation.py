"""The one argument check of the fused BatchNorm + residual + ReLU: the public functions run it (reference and
native backends), the raw Triton ops run it with ``kernel=True``. Shapes, dtypes, devices and the Python scalars
only (no device values: no host sync, and it runs on FakeTensors). Errors are ``ValueError``s naming the op, the
argument, what is expected and what was received."""
from __future__ import annotations

import torch

from trgnet_fast.ops._checks import (
    check_contiguous, check_dtype_device, check_leading_tensor, check_positive_float, check_shape,
    check_tensor_arguments, converted_state)

PARAMETER_NAMES = ("weight", "bias")
STATISTIC_NAMES = ("mean", "var")
STATE_RULE = "the state dtype: float64 for float64 x, else float32"


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the parameters, the statistics and every sum: float64 for float64 x, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_optional_tensors(op: str, named) -> None:
    for name, t in named:
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name}: expected a tensor or None, got {type(t).__name__}")


def check_argument_types(op: str, x, residual, frame_mask, weight, bias, eps) -> None:
    """The cheap part, run before the backend is chosen: tensors where tensors belong, None where allowed, eps > 0."""
    check_tensor_arguments(op, (("x", x), ("weight", weight), ("bias", bias)))
    _check_optional_tensors(op, (("residual", residual), ("frame_mask", frame_mask)))
    check_positive_float(op, "eps", eps)


def converted_parameters(op: str, x, weight, bias) -> tuple:
    """weight and bias in the state dtype of x (the public function takes any supported floating dtype)."""
    return converted_state(op, (("x", x), ("weight", weight), ("bias", bias)), PARAMETER_NAMES, state_dtype)[1:]


def _check_activations(op: str, x, named) -> None:
    for name, t in named:
        if t is not None:
            check_shape(op, name, t, x.shape, "(N, C, T, V) of x")
            check_dtype_device(op, name, t, x.dtype, "x", x)


def _check_frame_mask(op: str, x, frame_mask) -> None:
    if frame_mask is not None:
        n, _, t, _ = x.shape
        check_shape(op, "frame_mask", frame_mask, (n, 1, t, 1), "(N, 1, T, 1)")
        check_dtype_device(op, "frame_mask", frame_mask, x.dtype, "x", x, "a 0/1 mask in the dtype of x")


def _check_channel_vectors(op: str, x, named) -> None:
    for name, t in named:
        check_shape(op, name, t, x.shape[1:2], "(C,)")
        check_dtype_device(op, name, t, state_dtype(x.dtype), "x", x, STATE_RULE)


def validate_inputs(op: str, x, residual, frame_mask, weight, bias, eps, kernel: bool = False) -> None:
    """Shapes, dtypes and devices of every argument (module docstring of ``trgnet_fast/ops/batch_norm_relu``) and
    eps. ``kernel``: also contiguous tensors."""
    check_argument_types(op, x, residual, frame_mask, weight, bias, eps)
    check_leading_tensor(op, (("x", x),), "(N, C, T, V)")
    _check_activations(op, x, (("residual", residual),))
    _check_frame_mask(op, x, frame_mask)
    _check_channel_vectors(op, x, (("weight", weight), ("bias", bias)))
    if kernel:
        for name, t in (("x", x), ("residual", residual), ("frame_mask", frame_mask), ("weight", weight),
                        ("bias", bias)):
            if t is not None:
                check_contiguous(op, name, t)


def validate_backward_inputs(op: str, grad_out, out, x, frame_mask, weight, mean, var, eps, residual_grad,
                             kernel: bool = False) -> None:
    """The backward schema's arguments: grad_out and out (N, C, T, V) like x; frame_mask as the forward's; weight,
    mean and var (C,) in the state dtype; eps > 0; residual_grad a bool. ``kernel``: also contiguous tensors."""
    check_tensor_arguments(op, (("grad_out", grad_out), ("out", out), ("x", x), ("weight", weight), ("mean", mean),
                                ("var", var)))
    _check_optional_tensors(op, (("frame_mask", frame_mask),))
    check_positive_float(op, "eps", eps)
    if not isinstance(residual_grad, bool):
        raise ValueError(f"{op}: residual_grad: expected a bool, got {type(residual_grad).__name__}")
    check_leading_tensor(op, (("x", x),), "(N, C, T, V)")
    _check_activations(op, x, (("grad_out", grad_out), ("out", out)))
    _check_frame_mask(op, x, frame_mask)
    _check_channel_vectors(op, x, (("weight", weight), ("mean", mean), ("var", var)))
    if kernel:
        for name, t in (("grad_out", grad_out), ("out", out), ("x", x), ("frame_mask", frame_mask),
                        ("weight", weight), ("mean", mean), ("var", var)):
            if t is not None:
                check_contiguous(op, name, t)
