"""The one argument check of the fused SFI: the public function runs it (reference and native backends), the raw
Triton ops run it with ``kernel=True``. It reads shapes, dtypes, devices and the dropout probability only (no device
values: no host sync, and it runs on FakeTensors). Errors are ``ValueError``s naming the op, the argument, what is
expected and what was received."""
from __future__ import annotations

import numbers

import torch

from trgnet_fast.ops._checks import (
    check_contiguous, check_dtype_device, check_floating, check_kernel_layout, check_layer_input,
    check_sequence_inputs, check_shape, check_tensor_arguments, check_weights, shape_of)
from trgnet_fast.ops.att_module.validation import MAX_CHANNELS, state_dtype

WEIGHT_NAMES = ("conv_s_weight", "conv_s_bias", "fusion_weight", "fusion_bias", "ff1_weight", "ff1_bias",
                "ff2_weight", "ff2_bias")
MAX_GROUP_CHANNELS = 512  # G V, the width of conv_s's input

__all__ = ["WEIGHT_NAMES", "MAX_CHANNELS", "MAX_GROUP_CHANNELS", "state_dtype", "weight_shapes",
           "check_argument_types", "validate_inputs", "validate_backward_inputs"]


def weight_shapes(c: int, group_channels: int) -> dict[str, tuple[int, ...]]:
    """Expected shape of every weight and bias for C temporal channels and G V group channels."""
    return {"conv_s_weight": (c, group_channels, 1), "conv_s_bias": (c,), "fusion_weight": (c, 2 * c, 1),
            "fusion_bias": (c,), "ff1_weight": (c, c), "ff1_bias": (c,), "ff2_weight": (c, c), "ff2_bias": (c,)}


def check_argument_types(op: str, group, h, mask, weights, dropout_seed, dropout) -> None:
    """The cheap part, run before the backend is chosen (so before dropout is converted to float): tensors where
    tensors belong, None where allowed, a probability."""
    check_tensor_arguments(op, (("group", group), ("h", h), *zip(WEIGHT_NAMES, weights)))
    for name, t in (("mask", mask), ("dropout_seed", dropout_seed)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name}: expected a tensor or None, got {type(t).__name__}")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{op}: dropout: expected a probability in [0, 1), got {dropout!r}")


def validate_inputs(op: str, group, h, mask, weights, dropout_seed, dropout, kernel: bool = False) -> None:
    """Shapes, dtypes and devices of every argument (module docstring of ``trgnet_fast/ops/spatial_feature_injection``)
    and the range of dropout. ``kernel``: also contiguous tensors (group excepted: the kernels take its strides),
    C <= 256 and G V <= 512."""
    check_argument_types(op, group, h, mask, weights, dropout_seed, dropout)
    check_floating(op, "group", group)  # the first argument first
    check_layer_input(op, h, name="h")
    n, c, t = h.shape
    if group.dim() != 4 or group.shape[0] != n or group.shape[2] != t:
        raise ValueError(f"{op}: group: expected a 4-D tensor (N, G, T, V) = ({n}, G, {t}, V), got shape "
                         f"{shape_of(group)}")
    check_dtype_device(op, "group", group, h.dtype, "h", h)
    if dropout > 0 and dropout_seed is None:
        raise ValueError(f"{op}: dropout_seed: expected a (1,) int64 tensor when dropout > 0 (dropout={dropout}), "
                         "got None")
    group_channels = group.shape[1] * group.shape[3]
    named = [("h", h)] + check_weights(op, h, zip(WEIGHT_NAMES, weights), weight_shapes(c, group_channels), "h")
    named += check_sequence_inputs(op, h, mask, dropout_seed, None, "h")
    if kernel:
        check_kernel_layout(op, h, named, MAX_CHANNELS, "h")
        if group_channels > MAX_GROUP_CHANNELS:
            raise ValueError(f"{op}: group: expected G V <= {MAX_GROUP_CHANNELS} for the fused kernels, got "
                             f"G V = {group_channels}")


def validate_backward_inputs(op: str, grad_out, group, h, mask, weights, dropout_seed, dropout) -> None:
    """As ``validate_inputs(kernel=True)``, and grad_out (N, C, T) like h, contiguous."""
    validate_inputs(op, group, h, mask, weights, dropout_seed, dropout, kernel=True)
    check_shape(op, "grad_out", grad_out, h.shape, "(N, C, T) of the output")
    check_dtype_device(op, "grad_out", grad_out, h.dtype, "h", h)
    check_contiguous(op, "grad_out", grad_out)
