"""Inputs, float64 references, gradient errors and low-precision checks shared by the graph-conv tests
(Triton and native)."""
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


def msgc_grad_errors(grads, ref_grads, inputs, grad_out) -> dict[str, float]:
    """Relative error of each multiscale gradient (x, adjacency, weight, bias); no floors needed."""
    return {name: rel_err(g, r) for name, g, r in zip(("x", "adjacency", "weight", "bias"), grads, ref_grads)}


def assert_16bit_parity(fused, reference, reference64, grad_errors, inputs, grad_out, poison=lambda: None,
                        slack=0.0):
    """A fused graph conv on 16-bit ``inputs``: output and gradients finite, in that dtype, and each within 2x
    the error (against float64) of the plain-PyTorch ``reference`` run in the same dtype
    (docs/architecture.md#parity), plus ``slack`` (small shapes, where the reference's own error can be tiny by chance).
    ``grad_errors(grads, ref_grads, inputs, grad_out) -> {name: error}``; ``poison()`` runs right before the
    fused call (NaN-filled memory for its outputs)."""
    dtype = inputs[0].dtype
    ref_out, ref_grads = reference64(inputs, grad_out)
    low_out, low_grads = run_with_grads(reference, inputs, grad_out)
    poison()
    out, grads = run_with_grads(fused, inputs, grad_out)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out, ref_out) <= 2 * rel_err(low_out, ref_out) + slack
    errs = grad_errors(grads, ref_grads, inputs, grad_out)
    low_errs = grad_errors(low_grads, ref_grads, inputs, grad_out)
    for (name, err), g in zip(errs.items(), grads):
        assert g.dtype == dtype and torch.isfinite(g).all(), name
        assert err <= 2 * low_errs[name] + slack, (name, err, low_errs[name])


def assert_fp64_or_fp16_parity(errors, reference, reference64, inputs, grad_out):
    """``errors(inputs, grad_out) -> (out, {name: error})`` of a fused graph conv: fp64 inputs within 1e-10
    everywhere; fp16 inputs: the output within 2x the fp16 reference's error (+1e-3)."""
    _, errs = errors(inputs, grad_out)
    if inputs[0].dtype == torch.float64:
        assert max(errs.values()) <= 1e-10, errs
        return
    low_out, _ = run_with_grads(reference, inputs, grad_out)
    ref_out, _ = reference64(inputs, grad_out)
    assert errs["out"] <= 2 * rel_err(low_out, ref_out) + 1e-3, errs


class MultiscaleFront(torch.nn.Module):
    """TRGNet's SP front end around a multiscale graph conv ``conv(x, A, W, b)`` (x (N, C, T, V)): takes the
    model's (N, 12, V, T) layout, transposes, applies the op with learnable A, W, b (PKU sizes: 12 -> 64
    channels, 13 scales, V = 25), then ReLU."""

    def __init__(self, conv, device):
        super().__init__()
        self.conv = conv
        _, a, w, b = msgc_inputs(2, 12, 1, 25, 13, 64, dtype=torch.float32, device=device)
        self.a, self.w, self.b = (torch.nn.Parameter(t) for t in (a, w, b))

    def forward(self, x):
        return torch.relu(self.conv(x.transpose(2, 3), self.a, self.w, self.b))
