"""Inputs, the gradient errors and the runners (``op_cases.PositionalOpCases``: the fused op, the float64 reference
with gradients, the errors of a backend) shared by the adaptive graph-conv tests
(``tests/ops/adaptive_graph_conv/``)."""
from __future__ import annotations

import torch

from op_cases import PositionalOpCases
from op_checks import rel_err
from trgnet_fast.ops.adaptive_graph_conv import adaptive_graph_conv
from trgnet_fast.ops.adaptive_graph_conv.reference import adaptive_graph_conv_reference, gradient_error_floors

NAMES = ("x", "p", "q", "beta", "channel_graph", "joint_graph")


def make_inputs(N, C, T, V, dtype=torch.float64, device="cpu"):
    """Fresh inputs with the model's magnitudes: J symmetric in [0, 1], G ~ J + O(1) refinement."""
    x = torch.randn(N, C, T, V, dtype=torch.float64)
    p, q = torch.randn(N, T, V, dtype=torch.float64), torch.randn(N, T, V, dtype=torch.float64)
    beta = torch.randn(1, dtype=torch.float64)
    joint = torch.rand(V, V, dtype=torch.float64)
    joint = (joint + joint.T) / 2
    channel = joint + torch.randn(N, C, V, V, dtype=torch.float64) / V ** 0.5
    return [t.to(device=device, dtype=dtype) for t in (x, p, q, beta, channel, joint)]


def grad_errors(grads, ref_grads, inputs, grad_out) -> dict[str, float]:
    """Relative error of each gradient; grad_beta against max(|ref|, ||dF * th||), grad_joint_graph against
    max(|ref|, ||dF||) (``gradient_error_floors``)."""
    floors = gradient_error_floors(grad_out, *[t.detach().double() for t in inputs])
    return {name: rel_err(g, r, floors.get(name, 0.0)) for name, g, r in zip(NAMES, grads, ref_grads)}


CASES = PositionalOpCases(adaptive_graph_conv, NAMES, adaptive_graph_conv_reference, grad_errors)
fused, reference64, errors = CASES.fused, CASES.reference64, CASES.errors
