"""The boundary branch's dilated residual layer (MS-TCN's ``DilatedResidualLayer``) as one fused op
(docs/model.md#boundary-branch, docs/kernels.md#dilated_residual).

For every sequence (its frames alone, zero padding at its ends), with C channels, dilation d, m[t] = mask (1 when
mask is None) and r the dropout keep-and-scale mask:

    pre[t] = conv_bias + sum_k conv_weight[:, :, k] x[t + (k - 1) d]      (zero outside the sequence)
    o[t]   = ReLU(pre[t])
    z[t]   = conv_out_weight o[t] + conv_out_bias
    out[t] = (x[t] + z[t] r[t]) m[t]

This is ``DilatedResidualLayer`` of ``trgnet_fast/model/temporal.py`` (published mode: cu_seqlens None, every row
one sequence of T frames; the mask only multiplies). It is the AttModule without its attention branch, and
shares the AttModule's sequence layouts, dropout hash and kernel helpers (``trgnet_fast/ops/att_module``).

Sequences (``cu_seqlens`` (N + 1,) int32, cu[0] = 0, non-decreasing), as for ``att_module``:
    * None: N = B sequences, row n = frames [0, T) (the published padded layout);
    * x with N rows: padded rows, sequence n = row n, frames [0, cu[n+1] - cu[n]) (lengths <= T);
    * x with 1 row and N > 1: packed, sequence n = frames [cu[n], cu[n+1]) of row 0 (cu[N] = T).
Frames outside every sequence get out = 0 and grad_x = 0. Empty sequences are allowed.

Dropout: ``dropout_seed`` (1,) int64 on x's device, or None (then dropout must be 0). Element (b, c, t) is kept
iff the AttModule's hash of stream 1 (``att_module.reference.dropout_keep_mask(seed, 1, (B, C, T), p)``) says so,
and then scaled by 1 / (1 - p). The backward regenerates the mask from the seed; nothing is stored.

Shapes: x (B, C, T); mask (B, 1, T) dtype of x, or None; conv_weight (C, C, 3); conv_bias (C,); conv_out_weight
(C, C, 1); conv_out_bias (C,). All floating tensors of x's dtype (float32, float64, float16, bfloat16); sums in
float32 (float64 for float64 inputs).

Op schemas (the native ``trgnet::`` in csrc/dilated_residual.cpp and the Triton ``trgnet_triton::`` in
``triton_kernels.py`` share them)::

    dilated_residual(Tensor x, Tensor? mask, Tensor? cu_seqlens, Tensor conv_weight, Tensor conv_bias,
        Tensor conv_out_weight, Tensor conv_out_bias, Tensor? dropout_seed, int dilation, float dropout) -> Tensor
    dilated_residual_backward(Tensor grad_out, Tensor x, Tensor? mask, Tensor? cu_seqlens, Tensor conv_weight,
        Tensor conv_bias, Tensor conv_out_weight, Tensor conv_out_bias, Tensor? dropout_seed, int dilation,
        float dropout) -> (Tensor grad_x, Tensor grad_conv_weight, Tensor grad_conv_bias,
        Tensor grad_conv_out_weight, Tensor grad_conv_out_bias)

The forward saves its inputs only; the backward recomputes pre and o (docs/kernels.md#dilated_residual).
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty
from trgnet_fast.ops.dilated_residual.autograd import OP_NAME
from trgnet_fast.ops.dilated_residual.reference import dilated_residual_reference
from trgnet_fast.ops.dilated_residual.validation import check_argument_types, validate_inputs

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def _contiguous(t):
    return t.contiguous() if isinstance(t, torch.Tensor) else t


def dilated_residual(x, mask, conv_weight, conv_bias, conv_out_weight, conv_out_bias, *, dilation: int,
                     dropout: float = 0.0, dropout_seed=None, cu_seqlens=None,
                     backend: str | None = None) -> torch.Tensor:
    """One dilated residual layer (formula, layouts and shapes in the module docstring).

    Args:
        x: (B, C, T) input. mask: (B, 1, T) 0/1 in x's dtype, or None.
        conv_weight: (C, C, 3); conv_bias: (C,); conv_out_weight: (C, C, 1); conv_out_bias: (C,).
        dilation: of the k=3 conv, >= 1. dropout: drop probability in [0, 1) (0 in eval).
        dropout_seed: (1,) int64 on x's device (needed when dropout > 0), or None.
        cu_seqlens: (N + 1,) int32 sequence offsets, or None (published padded layout).
        backend: "auto" | "torch" | "triton" | "cuda" | None, see ``trgnet_fast.backend``.

    Returns:
        out: (B, C, T), dtype and device of x; differentiable w.r.t. x and the four weights and biases.

    Raises:
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices / values of the scalars
            (checked before any kernel runs).
        RuntimeError: the requested backend is not usable.
    """
    weights = (conv_weight, conv_bias, conv_out_weight, conv_out_bias)
    check_argument_types(OP_NAME, x, mask, weights, dropout_seed, cu_seqlens, dilation, dropout)
    check_nonempty(OP_NAME, (("x", x, "(B, C, T)"),))
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    scalars = (int(dilation), float(dropout))
    if impl == "triton":
        from trgnet_fast.ops.dilated_residual.triton_kernels import dilated_residual_triton

        return dilated_residual_triton(x.contiguous(), _contiguous(mask), _contiguous(cu_seqlens),
                                       *(w.contiguous() for w in weights), dropout_seed, *scalars)
    validate_inputs(OP_NAME, x, mask, cu_seqlens, weights, dropout_seed, *scalars)
    if impl == "torch":
        return dilated_residual_reference(x, mask, *weights, dilation=dilation, dropout=dropout,
                                          dropout_seed=dropout_seed, cu_seqlens=cu_seqlens)
    if impl == "cuda":
        return _native.ops().dilated_residual(x.contiguous(), _contiguous(mask), _contiguous(cu_seqlens),
                                              *(w.contiguous() for w in weights), dropout_seed, *scalars)
    raise AssertionError(impl)  # every registered backend is dispatched above
