"""Plain-PyTorch reference of the fused dilated residual layer (the yardstick of every test, parity row and
benchmark). Formula, shapes and sequence layouts in the package docstring
(``trgnet_fast/ops/dilated_residual/__init__.py``); the dropout hash and the sequence spans are the AttModule's."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trgnet_fast.ops.att_module.reference import (MODULE_DROPOUT_STREAM, conv_products_rss, hashed_dropout,
                                                 products_rss, quarter_roots, sequence_spans, traced_gradients)

DROPOUT_STREAM = MODULE_DROPOUT_STREAM  # the stream of the AttModule's dropout after its conv_out


def dilated_residual_reference(x, mask, conv_weight, conv_bias, conv_out_weight, conv_out_bias, *, dilation: int,
                               dropout: float = 0.0, dropout_seed=None, cu_seqlens=None,
                               trace: list | None = None) -> torch.Tensor:
    """Plain-PyTorch dilated residual layer on sequences given by ``cu_seqlens`` (package docstring). Shapes:
    x (B, C, T); mask (B, 1, T) or None; conv_weight (C, C, 3); conv_bias (C,); conv_out_weight (C, C, 1);
    conv_out_bias (C,). Returns out (B, C, T), zero on frames outside every sequence, computed in the inputs'
    dtype. ``trace``: a list that receives each sequence's intermediates (pre, o, z, x, dilation), their
    gradients retained (for ``gradient_error_floors``)."""
    out = torch.zeros_like(x)
    scale = hashed_dropout(torch.ones_like(x), dropout_seed, DROPOUT_STREAM, dropout) if dropout > 0 else None
    for row, start, length in sequence_spans(x, cu_seqlens):
        if length == 0:
            continue
        frames = slice(start, start + length)
        part = x[row:row + 1, :, frames]
        pre = F.conv1d(part, conv_weight, conv_bias, padding=dilation, dilation=dilation)
        o = torch.relu(pre)
        z = F.conv1d(o, conv_out_weight, conv_out_bias)
        y = z if scale is None else z * scale[row:row + 1, :, frames]
        result = part + y
        if mask is not None:
            result = result * mask[row:row + 1, :, frames]
        out[row:row + 1, :, frames] = result
        if trace is not None:
            for t in (pre, o, z):
                if t.requires_grad:
                    t.retain_grad()
            trace.append({"pre": pre, "o": o, "z": z, "x": part, "dilation": dilation})
    return out


def gradient_error_floors(inputs: dict, grad_out: torch.Tensor) -> dict[str, float]:
    """Denominator floors of the relative errors of the weights' and biases' gradients, by input name: a quarter of
    the root-sum-square of the elementary products each one sums over frames (a bias: the cotangents g_t; a
    weight: g_t (x) input_t), the AttModule's rule (``att_module.reference.gradient_error_floors``). Computed from
    the reference's own intermediates in float64. ``inputs``: the keyword inputs of
    ``dilated_residual_reference``; grad_out (B, C, T)."""
    squares: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        squares[name] = squares.get(name, 0.0) + value ** 2

    def frames_last(t):  # (1, C, L) -> (1, L, C)
        return t.transpose(1, 2)

    for steps in traced_gradients(dilated_residual_reference, inputs, grad_out):
        add("conv_out_bias", products_rss(frames_last(steps["z"].grad)))
        add("conv_out_weight", products_rss(frames_last(steps["z"].grad), frames_last(steps["o"])))
        bias_rss, weight_rss = conv_products_rss(steps["pre"].grad, steps["x"], steps["dilation"])
        add("conv_bias", bias_rss)
        add("conv_weight", weight_rss)
    return quarter_roots(squares)
