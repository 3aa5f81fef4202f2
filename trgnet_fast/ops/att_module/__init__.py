"""The whole AttModule of TRG-Net's encoder and decoder as one fused op (docs/model.md#attmodule,
docs/kernels.md#att_module).

For every sequence (its frames alone, zero padding at its ends), with C channels, H heads of D = C / H,
dilation d, phi = sigmoid, m[t] = mask (1 when mask is None), r1, r2 the dropout keep-and-scale masks:

    o[t]   = ReLU(conv_bias + sum_k conv_weight[:, :, k] x[t + (k - 1) d])       (zero outside the sequence)
    mean, var = mean and biased variance of o over the sequence's frames, per channel
    q[t]   = (o[t] - mean) / sqrt(var + norm_eps)                                 (InstanceNorm, no affine)
    Q, K   = query/key Linear of q;  V = value Linear of q (encoder) or of values (decoder)
    KV_h   = sum_t phi(K[t]_h) (x) V[t]_h;   ksum_h = sum_t phi(K[t]_h)
    a[t]_h = phi(Q[t]_h) KV_h / (phi(Q[t]_h) . (ksum_h + attention_eps))
    p[t]   = (out_weight a[t] + out_bias) * r1[t] * m[t]
    u[t]   = alpha p[t] + o[t]
    out[t] = (x[t] + (conv_out_weight u[t] + conv_out_bias) * r2[t]) * m[t]

This is ``AttModule`` of ``trgnet_fast/model/attention.py`` (published mode: cu_seqlens None, every row one
sequence of T frames, padding included in the statistics and sums; the mask only multiplies).

Sequences (``cu_seqlens`` (N + 1,) int32, cu[0] = 0, non-decreasing):
    * None: N = B sequences, row n = frames [0, T) (the published padded layout);
    * x with N rows: padded rows, sequence n = row n, frames [0, cu[n+1] - cu[n]) (lengths <= T);
    * x with 1 row and N > 1: packed, sequence n = frames [cu[n], cu[n+1]) of row 0 (cu[N] = T).
Frames outside every sequence get out = 0 and grad_x = 0. Empty sequences are allowed (they contribute
nothing; their statistics are mean 0, rstd 1 / sqrt(norm_eps), states 0).

Dropout: ``dropout_seed`` (1,) int64 on x's device, or None (no dropout: both p must be 0). Element
(b, c, t) of stream s (0: attention dropout p1 = attention_dropout on p, 1: module dropout p2 = dropout
after conv_out) is kept iff hash(seed, s, (b C + c) T + t) >= floor(p 2^24) and then scaled by 1 / (1 - p);
the hash is ``reference.dropout_keep_mask`` (the same in the Triton and CUDA kernels and the reference).
The backward regenerates the masks from the seed; nothing is stored.

Shapes: x (B, C, T); values (B, C, T) or None; mask (B, 1, T) dtype of x, or None; conv_weight (C, C, 3);
conv_bias (C,); query/key/value/out weights (C, C) (nn.Linear: [out, in]); their biases (C,); conv_out_weight
(C, C, 1); conv_out_bias (C,); alpha: 0-dim tensor in the state dtype (float64 for float64 inputs, else
float32). All floating tensors of x's dtype (float32, float64, float16, bfloat16) except alpha; statistics and
states in the state dtype.

Op schemas (the native ``trgnet::`` in csrc/att_module.cpp and the Triton ``trgnet_triton::`` in
``triton_kernels.py`` share them)::

    att_module(Tensor x, Tensor? values, Tensor? mask, Tensor? cu_seqlens, Tensor conv_weight,
        Tensor conv_bias, Tensor query_weight, Tensor query_bias, Tensor key_weight, Tensor key_bias,
        Tensor value_weight, Tensor value_bias, Tensor out_weight, Tensor out_bias, Tensor conv_out_weight,
        Tensor conv_out_bias, Tensor alpha, Tensor? dropout_seed, int dilation, int heads, float norm_eps,
        float attention_eps, float attention_dropout, float dropout)
        -> (Tensor out, Tensor norm_stats, Tensor kv_state, Tensor key_sum)
    att_module_backward(Tensor grad_out, <the 18 tensor inputs above, x .. dropout_seed>, Tensor norm_stats,
        Tensor kv_state, Tensor key_sum, int dilation, int heads, float norm_eps, float attention_eps,
        float attention_dropout, float dropout)
        -> (grad_x, grad_values, grad_conv_weight, grad_conv_bias, grad_query_weight, grad_query_bias,
            grad_key_weight, grad_key_bias, grad_value_weight, grad_value_bias, grad_out_weight, grad_out_bias,
            grad_conv_out_weight, grad_conv_out_bias, grad_alpha)

``norm_stats`` (N, 2, C) = [mean, rstd]; ``kv_state`` (N, H, D, D) = KV; ``key_sum`` (N, H, D) = ksum without
eps; state dtype, saved for the backward, not differentiable. ``grad_values`` is an empty (0,) tensor in
encoder mode. What the backward recomputes instead of storing: docs/kernels.md#att_module.
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty
from trgnet_fast.ops.att_module.autograd import OP_NAME
from trgnet_fast.ops.att_module.reference import att_module_reference
from trgnet_fast.ops.att_module.validation import check_argument_types, state_dtype, validate_inputs

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)




def _contiguous(t):
    return t.contiguous() if isinstance(t, torch.Tensor) else t


def att_module(x, values, mask, conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias,
               value_weight, value_bias, out_weight, out_bias, conv_out_weight, conv_out_bias, alpha, *,
               dilation: int, heads: int = 4, norm_eps: float = 1e-5, attention_eps: float = 1e-6,
               attention_dropout: float = 0.0, dropout: float = 0.0, dropout_seed=None, cu_seqlens=None,
               backend: str | None = None) -> torch.Tensor:
    """One AttModule (formula, layouts and shapes in the module docstring).

    Args:
        x: (B, C, T) input. values: (B, C, T) decoder values, or None (encoder). mask: (B, 1, T), or None.
        conv_weight .. conv_out_bias: the module's parameters (shapes in the module docstring).
        alpha: 0-dim floating tensor, differentiable; taken in the state dtype (float64 for float64 x, else
            float32), converted here if it is not.
        dilation: of the k=3 conv, >= 1. heads: attention heads, C % heads == 0.
        norm_eps, attention_eps: InstanceNorm eps and the key-sum eps.
        attention_dropout, dropout: drop probabilities in [0, 1) (0 in eval).
        dropout_seed: (1,) int64 on x's device (needed when a probability is > 0), or None.
        cu_seqlens: (N + 1,) int32 sequence offsets, or None (published padded layout).
        backend: "auto" | "torch" | "triton" | "cuda" | None, see ``trgnet_fast.backend``.

    Returns:
        out: (B, C, T), dtype and device of x; differentiable w.r.t. x, values, every weight and bias, alpha.

    Raises:
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices / values of the scalars
            (checked before any kernel runs).
        RuntimeError: the requested backend is not usable.
    """
    weights = (conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
               out_weight, out_bias, conv_out_weight, conv_out_bias)
    check_argument_types(OP_NAME, x, values, mask, weights, alpha, dropout_seed, cu_seqlens)
    check_nonempty(OP_NAME, (("x", x, "(B, C, T)"),))
    if alpha.is_floating_point() and x.dtype.is_floating_point:
        alpha = alpha.to(state_dtype(x.dtype))
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    scalars = (int(dilation), int(heads), float(norm_eps), float(attention_eps), float(attention_dropout),
               float(dropout))
    if impl == "triton":
        from trgnet_fast.ops.att_module.triton_kernels import att_module_triton

        return att_module_triton(x.contiguous(), _contiguous(values), _contiguous(mask), _contiguous(cu_seqlens),
                                 *(w.contiguous() for w in weights), alpha, dropout_seed, *scalars)[0]
    validate_inputs(OP_NAME, x, values, mask, cu_seqlens, weights, alpha, dropout_seed, *scalars)
    if impl == "torch":
        return att_module_reference(x, values, mask, *weights, alpha, dilation=dilation, heads=heads,
                                    norm_eps=norm_eps, attention_eps=attention_eps,
                                    attention_dropout=attention_dropout, dropout=dropout,
                                    dropout_seed=dropout_seed, cu_seqlens=cu_seqlens)
    if impl == "cuda":
        return _native.ops().att_module(x.contiguous(), _contiguous(values), _contiguous(mask),
                                        _contiguous(cu_seqlens), *(w.contiguous() for w in weights), alpha,
                                        dropout_seed, *scalars)[0]
    raise AssertionError(impl)  # every registered backend is dispatched above
