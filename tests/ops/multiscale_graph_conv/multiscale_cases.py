"""Inputs, gradient errors, the runners (``op_cases.PositionalOpCases``: the fused op, the float64 reference with
gradients, the errors of a backend) and a model front end shared by the multi-scale graph-conv tests
(``tests/ops/multiscale_graph_conv/``)."""
from __future__ import annotations

import torch

from op_cases import PositionalOpCases
from op_checks import rel_err
from trgnet_fast.ops.multiscale_graph_conv import multiscale_graph_conv
from trgnet_fast.ops.multiscale_graph_conv.reference import multiscale_graph_conv_reference

NAMES = ("x", "adjacency", "weight", "bias")


def make_inputs(N, C, T, V, S, O, dtype=torch.float64, device="cpu"):
    """Fresh x (N, C, T, V), adjacency (S*V, V) ~ 1/sqrt(V), weight (O, S*C), bias (O,)."""
    x = torch.randn(N, C, T, V, dtype=torch.float64)
    a = torch.randn(S * V, V, dtype=torch.float64) / V ** 0.5
    w = torch.randn(O, S * C, dtype=torch.float64) / (S * C) ** 0.5
    b = torch.randn(O, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (x, a, w, b)]


def grad_errors(grads, ref_grads, inputs, grad_out) -> dict[str, float]:
    """Relative error of each gradient (x, adjacency, weight, bias); no floors needed."""
    return {name: rel_err(g, r) for name, g, r in zip(NAMES, grads, ref_grads)}


CASES = PositionalOpCases(multiscale_graph_conv, NAMES, multiscale_graph_conv_reference, grad_errors)
fused, reference64, errors = CASES.fused, CASES.reference64, CASES.errors


class MultiscaleFront(torch.nn.Module):
    """TRGNet's SP front end around a multiscale graph conv ``conv(x, A, W, b)`` (x (N, C, T, V)): takes the
    model's (N, 12, V, T) layout, transposes, applies the op with learnable A, W, b (PKU sizes: 12 -> 64
    channels, 13 scales, V = 25), then ReLU."""

    def __init__(self, conv, device):
        super().__init__()
        self.conv = conv
        _, a, w, b = make_inputs(2, 12, 1, 25, 13, 64, dtype=torch.float32, device=device)
        self.a, self.w, self.b = (torch.nn.Parameter(t) for t in (a, w, b))

    def forward(self, x):
        return torch.relu(self.conv(x.transpose(2, 3), self.a, self.w, self.b))
