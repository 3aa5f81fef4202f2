"""Inputs, float64 references and gradient errors shared by the graph-conv tests (Triton and native)."""
from __future__ import annotations

import torch

from op_checks import rel_err, run_with_grads
from trgnet_fast.ops.adaptive_graph_conv import adaptive_graph_conv_reference, gradient_error_floors
from trgnet_fast.ops.multiscale_graph_conv import multiscale_graph_conv_reference

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
AGC_NAMES = ("x", "p", "q", "beta", "channel_graph", "joint_graph")


def msgc_inputs(N, C, T, V, S, O, dtype=torch.float64, device="cpu"):
    """Fresh x (N, C, T, V), adjacency (S*V, V) ~ 1/sqrt(V), weight (O, S*C), bias (O,)."""
    x = torch.randn(N, C, T, V, dtype=torch.float64)
    a = torch.randn(S * V, V, dtype=torch.float64) / V ** 0.5
    w = torch.randn(O, S * C, dtype=torch.float64) / (S * C) ** 0.5
    b = torch.randn(O, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (x, a, w, b)]


def msgc_reference64(inputs, grad_out):
    return run_with_grads(multiscale_graph_conv_reference, [t.double() for t in inputs], grad_out.double())


def agc_inputs(N, C, T, V, dtype=torch.float64, device="cpu"):
    """Fresh inputs with the model's magnitudes: J symmetric in [0, 1], G ~ J + O(1) refinement."""
    x = torch.randn(N, C, T, V, dtype=torch.float64)
    p, q = torch.randn(N, T, V, dtype=torch.float64), torch.randn(N, T, V, dtype=torch.float64)
    beta = torch.randn(1, dtype=torch.float64)
    joint = torch.rand(V, V, dtype=torch.float64)
    joint = (joint + joint.T) / 2
    channel = joint + torch.randn(N, C, V, V, dtype=torch.float64) / V ** 0.5
    return [t.to(device=device, dtype=dtype) for t in (x, p, q, beta, channel, joint)]


def agc_reference64(inputs, grad_out):
    return run_with_grads(adaptive_graph_conv_reference, [t.double() for t in inputs], grad_out.double())


def agc_grad_errors(grads, ref_grads, inputs, grad_out) -> dict[str, float]:
    """Relative error of each gradient; grad_beta against max(|ref|, ||dF * th||) (``gradient_error_floors``)."""
    floors = gradient_error_floors(grad_out, *[t.detach().double() for t in inputs])
    return {name: rel_err(g, r, floors.get(name, 0.0)) for name, g, r in zip(AGC_NAMES, grads, ref_grads)}
