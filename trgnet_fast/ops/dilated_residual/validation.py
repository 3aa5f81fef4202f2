"""The one argument check of the fused dilated residual layer: the public function runs it (reference and native
backends), the raw Triton ops run it with ``kernel=True``. It reads shapes, dtypes, devices and the Python scalars
only (no device values: no host sync, and it runs on FakeTensors). Errors are ``ValueError``s naming the op, the
argument, what is expected and what was received."""
from __future__ import annotations

import numbers

import torch

from trgnet_fast.ops._checks import (
    check_contiguous, check_dtype_device, check_kernel_layout, check_layer_input, check_sequence_inputs, check_shape,
    check_tensor_arguments, check_weights)
from trgnet_fast.ops.att_module.validation import MAX_CHANNELS, state_dtype

WEIGHT_NAMES = ("conv_weight", "conv_bias", "conv_out_weight", "conv_out_bias")

__all__ = ["WEIGHT_NAMES", "MAX_CHANNELS", "state_dtype", "weight_shapes", "check_argument_types",
           "validate_inputs", "validate_backward_inputs"]


def weight_shapes(c: int) -> dict[str, tuple[int, ...]]:
    """Expected shape of every weight and bias for C channels."""
    return {"conv_weight": (c, c, 3), "conv_bias": (c,), "conv_out_weight": (c, c, 1), "conv_out_bias": (c,)}


def check_argument_types(op: str, x, mask, weights, dropout_seed, cu_seqlens, dilation, dropout) -> None:
    """The cheap part, run before the backend is chosen (so before the scalars are converted to int and float):
    tensors where tensors belong, None where allowed, an integer dilation >= 1, a probability."""
    check_tensor_arguments(op, (("x", x), *zip(WEIGHT_NAMES, weights)))
    for name, t in (("mask", mask), ("dropout_seed", dropout_seed), ("cu_seqlens", cu_seqlens)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name}: expected a tensor or None, got {type(t).__name__}")
    if isinstance(dilation, bool) or not isinstance(dilation, numbers.Integral) or dilation < 1:
        raise ValueError(f"{op}: dilation: expected an integer >= 1, got {dilation!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{op}: dropout: expected a probability in [0, 1), got {dropout!r}")
    if dropout > 0 and dropout_seed is None:
        raise ValueError(f"{op}: dropout_seed: expected a (1,) int64 tensor when dropout > 0 (dropout={dropout}), "
                         "got None")


def validate_inputs(op: str, x, mask, cu_seqlens, weights, dropout_seed, dilation, dropout,
                    kernel: bool = False) -> None:
    """Shapes, dtypes and devices of every argument (module docstring of ``trgnet_fast/ops/dilated_residual``) and
    the ranges of the scalars. ``kernel``: also contiguous tensors and C <= 256."""
    check_argument_types(op, x, mask, weights, dropout_seed, cu_seqlens, dilation, dropout)
    check_layer_input(op, x)
    c = x.shape[1]
    if dropout > 0 and dropout_seed is None:
        raise ValueError(f"{op}: dropout_seed: expected a (1,) int64 tensor when dropout > 0 (dropout={dropout}), "
                         "got None")
    named = [("x", x)]
    named += check_weights(op, x, zip(WEIGHT_NAMES, weights), weight_shapes(c))
    named += check_sequence_inputs(op, x, mask, dropout_seed, cu_seqlens)
    if kernel:
        check_kernel_layout(op, x, named, MAX_CHANNELS)


def validate_backward_inputs(op: str, grad_out, x, mask, cu_seqlens, weights, dropout_seed, dilation,
                             dropout) -> None:
    """As ``validate_inputs(kernel=True)``, and grad_out (B, C, T) like x, contiguous."""
    validate_inputs(op, x, mask, cu_seqlens, weights, dropout_seed, dilation, dropout, kernel=True)
    check_shape(op, "grad_out", grad_out, x.shape, "(B, C, T) of the output")
    check_dtype_device(op, "grad_out", grad_out, x.dtype, "x", x)
    check_contiguous(op, "grad_out", grad_out)
