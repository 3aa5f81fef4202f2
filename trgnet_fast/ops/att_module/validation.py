"""The one argument check of the fused AttModule: the public function runs it (reference and native backends),
the raw Triton ops run it with ``kernel=True``. It reads shapes, dtypes, devices and the Python scalars only
(never device values, so no host sync and it runs on FakeTensors). Errors are ``ValueError``s naming the op,
the argument, what is expected and what was received."""
from __future__ import annotations

import torch

from trgnet_fast.ops._checks import (
    check_contiguous, check_dtype_device, check_kernel_layout, check_layer_input, check_positive_float,
    check_sequence_inputs, check_shape, check_tensor_arguments, check_weights)

WEIGHT_NAMES = ("conv_weight", "conv_bias", "query_weight", "query_bias", "key_weight", "key_bias",
                "value_weight", "value_bias", "out_weight", "out_bias", "conv_out_weight", "conv_out_bias")
MAX_CHANNELS = 256


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of alpha, the statistics and the states: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def weight_shapes(c: int) -> dict[str, tuple[int, ...]]:
    """Expected shape of every weight and bias for C channels."""
    square = (c, c)
    return {"conv_weight": (c, c, 3), "conv_bias": (c,), "query_weight": square, "query_bias": (c,),
            "key_weight": square, "key_bias": (c,), "value_weight": square, "value_bias": (c,),
            "out_weight": square, "out_bias": (c,), "conv_out_weight": (c, c, 1), "conv_out_bias": (c,)}


def check_argument_types(op: str, x, values, mask, weights, alpha, dropout_seed, cu_seqlens) -> None:
    """The cheap part, run before the backend is chosen: tensors where tensors belong, None where allowed."""
    check_tensor_arguments(op, (("x", x), *zip(WEIGHT_NAMES, weights), ("alpha", alpha)))
    for name, t in (("values", values), ("mask", mask), ("dropout_seed", dropout_seed), ("cu_seqlens", cu_seqlens)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name}: expected a tensor or None, got {type(t).__name__}")


def _check_scalars(op, c, dilation, heads, norm_eps, attention_eps, attention_dropout, dropout, dropout_seed):
    for name, value in (("dilation", dilation), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{op}: {name}: expected an integer >= 1, got {value!r}")
    if c % heads:
        raise ValueError(f"{op}: heads: expected a divisor of the channels C = {c}, got {heads}")
    for name, value in (("norm_eps", norm_eps), ("attention_eps", attention_eps)):
        check_positive_float(op, name, value)
    for name, value in (("attention_dropout", attention_dropout), ("dropout", dropout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{op}: {name}: expected a probability in [0, 1), got {value!r}")
    if (attention_dropout > 0 or dropout > 0) and dropout_seed is None:
        raise ValueError(f"{op}: dropout_seed: expected a (1,) int64 tensor when a dropout probability is > 0 "
                         f"(attention_dropout={attention_dropout}, dropout={dropout}), got None")


def validate_inputs(op: str, x, values, mask, cu_seqlens, weights, alpha, dropout_seed, dilation, heads,
                    norm_eps, attention_eps, attention_dropout, dropout, kernel: bool = False) -> None:
    """Shapes, dtypes and devices of every argument (module docstring of ``trgnet_fast/ops/att_module``) and the
    ranges of the scalars. ``kernel``: also contiguous tensors and C <= 256."""
    check_argument_types(op, x, values, mask, weights, alpha, dropout_seed, cu_seqlens)
    check_layer_input(op, x)
    c = x.shape[1]
    _check_scalars(op, c, dilation, heads, norm_eps, attention_eps, attention_dropout, dropout, dropout_seed)
    named = [("x", x)]
    if values is not None:
        check_shape(op, "values", values, x.shape, "(B, C, T) like x")
        check_dtype_device(op, "values", values, x.dtype, "x", x)
        named.append(("values", values))
    named += check_weights(op, x, zip(WEIGHT_NAMES, weights), weight_shapes(c))
    check_shape(op, "alpha", alpha, (), "() (a 0-dim tensor)")
    check_dtype_device(op, "alpha", alpha, state_dtype(x.dtype), "x", x, "float64 for float64 x, else float32")
    named += check_sequence_inputs(op, x, mask, dropout_seed, cu_seqlens)
    if kernel:
        check_kernel_layout(op, x, named, MAX_CHANNELS)


def validate_backward_inputs(op: str, grad_out, x, values, mask, cu_seqlens, weights, alpha, dropout_seed,
                             norm_stats, kv_state, key_sum, dilation, heads, norm_eps, attention_eps,
                             attention_dropout, dropout) -> None:
    """As ``validate_inputs(kernel=True)``, and grad_out (B, C, T) like x; norm_stats (N, 2, C), kv_state
    (N, H, D, D), key_sum (N, H, D) in the state dtype, all contiguous."""
    validate_inputs(op, x, values, mask, cu_seqlens, weights, alpha, dropout_seed, dilation, heads, norm_eps,
                    attention_eps, attention_dropout, dropout, kernel=True)
    b, c, _ = x.shape
    n = b if cu_seqlens is None else cu_seqlens.shape[0] - 1
    d = c // heads
    check_shape(op, "grad_out", grad_out, x.shape, "(B, C, T) of the output")
    check_dtype_device(op, "grad_out", grad_out, x.dtype, "x", x)
    check_contiguous(op, "grad_out", grad_out)
    for name, t, shape, layout in (("norm_stats", norm_stats, (n, 2, c), "(N, 2, C)"),
                                   ("kv_state", kv_state, (n, heads, d, d), "(N, H, D, D)"),
                                   ("key_sum", key_sum, (n, heads, d), "(N, H, D)")):
        check_shape(op, name, t, shape, layout)
        check_dtype_device(op, name, t, state_dtype(x.dtype), "x", x, "float64 for float64 inputs, else float32")
        check_contiguous(op, name, t)
