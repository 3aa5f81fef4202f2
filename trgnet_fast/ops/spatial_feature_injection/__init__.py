"""STI's spatial feature injection (SFI) as one fused op (docs/model.md#sfi, docs/kernels.md#spatial_feature_injection).

Per frame t of every batch row n (no mixing across frames), with G channels per spatial group, V joints, C temporal
channels, m[t] = mask (1 when mask is None) and r the dropout keep-and-scale mask:

    g[t]   = flatten_joints(group)[:, t], channel v G + c = group[n, c, t, v]          (G V,)
    s[t]   = conv_s_weight g[t] + conv_s_bias                                           (C,)
    f[t]   = fusion_weight [h[t]; s[t]] + fusion_bias                                   (C,)   ([h; s]: 2C)
    a[t]   = ff1_weight f[t] + ff1_bias;  u[t] = GELU(a[t]) r[t]                        (C,)   (GELU: the erf form)
    out[t] = (ff2_weight u[t] + ff2_bias + h[t]) m[t]

This is ``SpatialFeatureInjection`` of ``trgnet_fast/model/temporal.py`` (conv_s, conv_fusion, ff: Linear → GELU →
Dropout(0.3) → Linear). Every frame is independent, so sequences need no offsets: frames with m = 0 give out = 0 and
no gradient, the packed layout is the padded one with all frames valid.

Dropout: ``dropout_seed`` (1,) int64 on h's device, or None (then dropout must be 0). Element (n, c, t) of u (as a
(N, C, T) tensor) is kept iff the AttModule's hash of stream 0 (``att_module.reference.dropout_keep_mask(seed, 0,
(N, C, T), p)``; each call draws its own seed) says so, and then scaled by 1 / (1 - p). The backward regenerates
the mask from the seed; nothing is stored.

Shapes: group (N, G, T, V), any strides (the model passes a channel slice of STI's split, not a copy); h (N, C, T);
mask (N, 1, T) dtype of h, or None; conv_s_weight (C, G V, 1); conv_s_bias (C,); fusion_weight (C, 2C, 1);
fusion_bias (C,); ff1_weight, ff2_weight (C, C) (nn.Linear: [out, in]); ff1_bias, ff2_bias (C,). All floating
tensors of h's dtype (float32, float64, float16, bfloat16); sums in float32 (float64 for float64 inputs).

Op schemas (the native ``trgnet::`` in csrc/spatial_feature_injection.cpp and the Triton ``trgnet_triton::`` in
``triton_kernels.py`` share them)::

    spatial_feature_injection(Tensor group, Tensor h, Tensor? mask, Tensor conv_s_weight, Tensor conv_s_bias,
        Tensor fusion_weight, Tensor fusion_bias, Tensor ff1_weight, Tensor ff1_bias, Tensor ff2_weight,
        Tensor ff2_bias, Tensor? dropout_seed, float dropout) -> Tensor
    spatial_feature_injection_backward(Tensor grad_out, <the 12 tensor inputs above, group .. dropout_seed>,
        float dropout) -> (Tensor grad_group, Tensor grad_h, Tensor grad_conv_s_weight, Tensor grad_conv_s_bias,
        Tensor grad_fusion_weight, Tensor grad_fusion_bias, Tensor grad_ff1_weight, Tensor grad_ff1_bias,
        Tensor grad_ff2_weight, Tensor grad_ff2_bias)

grad_group is contiguous (N, G, T, V). The forward saves its inputs only; the backward recomputes s, f, a and u
(docs/kernels.md#spatial_feature_injection).
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty
from trgnet_fast.ops.spatial_feature_injection.autograd import OP_NAME
from trgnet_fast.ops.spatial_feature_injection.reference import spatial_feature_injection_reference
from trgnet_fast.ops.spatial_feature_injection.validation import check_argument_types, validate_inputs

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def _contiguous(t):
    return t.contiguous() if isinstance(t, torch.Tensor) else t


def spatial_feature_injection(group, h, mask, conv_s_weight, conv_s_bias, fusion_weight, fusion_bias, ff1_weight,
                              ff1_bias, ff2_weight, ff2_bias, *, dropout: float = 0.0, dropout_seed=None,
                              backend: str | None = None) -> torch.Tensor:
    """One SFI fusion (formula and shapes in the module docstring).

    Args:
        group: (N, G, T, V) spatial group, any strides. h: (N, C, T) temporal stream. mask: (N, 1, T) 0/1 in h's
            dtype, or None.
        conv_s_weight: (C, G V, 1); conv_s_bias: (C,); fusion_weight: (C, 2C, 1); fusion_bias: (C,);
        ff1_weight, ff2_weight: (C, C); ff1_bias, ff2_bias: (C,).
        dropout: drop probability in [0, 1) of the feed-forward's dropout (0 in eval).
        dropout_seed: (1,) int64 on h's device (needed when dropout > 0), or None.
        backend: "auto" | "torch" | "triton" | "cuda" | None, see ``trgnet_fast.backend``.

    Returns:
        out: (N, C, T), dtype and device of h; differentiable w.r.t. group, h and every weight and bias.

    Raises:
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices / value of dropout
            (checked before any kernel runs).
        RuntimeError: the requested backend is not usable.
    """
    weights = (conv_s_weight, conv_s_bias, fusion_weight, fusion_bias, ff1_weight, ff1_bias, ff2_weight, ff2_bias)
    check_argument_types(OP_NAME, group, h, mask, weights, dropout_seed, dropout)
    check_nonempty(OP_NAME, (("group", group, "(N, G, T, V)"), ("h", h, "(N, C, T)")))
    impl = resolve_backend(OP_NAME, backend, h.device.type)
    if impl == "triton":
        from trgnet_fast.ops.spatial_feature_injection.triton_kernels import spatial_feature_injection_triton

        return spatial_feature_injection_triton(group, h.contiguous(), _contiguous(mask),
                                                *(w.contiguous() for w in weights), dropout_seed, float(dropout))
    validate_inputs(OP_NAME, group, h, mask, weights, dropout_seed, float(dropout))
    if impl == "torch":
        return spatial_feature_injection_reference(group, h, mask, *weights, dropout=dropout,
                                                   dropout_seed=dropout_seed)
    if impl == "cuda":
        return _native.ops().spatial_feature_injection(group, h.contiguous(), _contiguous(mask),
                                                       *(w.contiguous() for w in weights), dropout_seed,
                                                       float(dropout))
    raise AssertionError(impl)  # every registered backend is dispatched above
