"""Plain-PyTorch reference of the fused SFI (the yardstick of every test, parity row and benchmark). Formula and
shapes in the package docstring (``trgnet_fast/ops/spatial_feature_injection/__init__.py``); the dropout hash is the
AttModule's."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trgnet_fast.ops.att_module.reference import (ATTENTION_DROPOUT_STREAM, hashed_dropout, products_rss,
                                                 quarter_roots, traced_gradients)

DROPOUT_STREAM = ATTENTION_DROPOUT_STREAM  # stream 0 of the shared hash; every call draws its own seed


def flatten_joints(group: torch.Tensor) -> torch.Tensor:
    """(N, G, T, V) → (N, V G, T) with channel index v G + c (joint-major), STI's layout."""
    n, g, t, v = group.shape
    return group.permute(0, 3, 1, 2).reshape(n, v * g, t)


def spatial_feature_injection_reference(group, h, mask, conv_s_weight, conv_s_bias, fusion_weight, fusion_bias,
                                        ff1_weight, ff1_bias, ff2_weight, ff2_bias, *, dropout: float = 0.0,
                                        dropout_seed=None, trace: list | None = None) -> torch.Tensor:
    """Plain-PyTorch SFI (package docstring). Shapes: group (N, G, T, V); h (N, C, T); mask (N, 1, T) or None;
    conv_s_weight (C, G V, 1); fusion_weight (C, 2C, 1); ff weights (C, C); biases (C,). Returns out (N, C, T) in the
    inputs' dtype. ``trace``: a list that receives the intermediates (g, s, cat, f, a, u; gradients retained, for
    ``gradient_error_floors``)."""
    g = flatten_joints(group)
    s = F.conv1d(g, conv_s_weight, conv_s_bias)
    cat = torch.cat([h, s], dim=1)
    f = F.conv1d(cat, fusion_weight, fusion_bias)
    a = F.linear(f.transpose(1, 2), ff1_weight, ff1_bias).transpose(1, 2)  # (N, C, T)
    u = hashed_dropout(F.gelu(a), dropout_seed, DROPOUT_STREAM, dropout)
    y = F.linear(u.transpose(1, 2), ff2_weight, ff2_bias).transpose(1, 2)
    out = y + h
    out = out if mask is None else out * mask
    if trace is not None:
        steps = {"g": g, "s": s, "cat": cat, "f": f, "a": a, "u": u, "y": y}
        for t in steps.values():
            if t.requires_grad:
                t.retain_grad()
        trace.append(steps)
    return out


def gradient_error_floors(inputs: dict, grad_out: torch.Tensor) -> dict[str, float]:
    """Denominator floors of the relative errors of the weights' and biases' gradients, by input name: a quarter of
    the root-sum-square of the elementary products each one sums over frames (a bias: the cotangents g_t; a
    weight: g_t (x) input_t), the AttModule's rule (``att_module.reference.gradient_error_floors``). Computed from
    the reference's own intermediates in float64. ``inputs``: the keyword inputs of
    ``spatial_feature_injection_reference``; grad_out (N, C, T)."""
    squares: dict[str, float] = {}

    def frames_last(t):  # (N, C, T) -> (N, T, C)
        return t.transpose(1, 2)

    for steps in traced_gradients(spatial_feature_injection_reference, inputs, grad_out):
        for name, out, source in (("conv_s", "s", "g"), ("fusion", "f", "cat"), ("ff1", "a", "f"),
                                  ("ff2", "y", "u")):
            grad = frames_last(steps[out].grad)
            squares[f"{name}_bias"] = products_rss(grad) ** 2
            squares[f"{name}_weight"] = products_rss(grad, frames_last(steps[source])) ** 2
    return quarter_roots(squares)
