"""Plain-PyTorch reference of the adaptive graph conv: the published computation (the yardstick of every test,
parity row and benchmark), and the floors of its gradient errors. Shapes in the package docstring
(``trgnet_fast/ops/adaptive_graph_conv``)."""
from __future__ import annotations

import torch


def adaptive_graph_conv_reference(x, p, q, beta, channel_graph, joint_graph):
    """The published computation (model/spatial.py CTRGC), in the inputs' dtype.

    x: (N, C, T, V); p, q: (N, T, V); beta: (1,) or (); channel_graph: (N, C, V, V); joint_graph: (V, V).
    Returns (N, C, T, V).
    """
    frame_graph = beta * torch.tanh(p[..., :, None] - q[..., None, :]) + joint_graph  # (N, T, V, V)
    y_frame = torch.einsum("ntuv,nctv->nctu", frame_graph, x)
    y_channel = torch.einsum("ncuv,nctv->nctu", channel_graph, x)
    return y_frame + y_channel


def gradient_error_floors(grad_out, x, p, q, beta, channel_graph, joint_graph) -> dict[str, float]:
    """Denominator floors for relative gradient errors: {"beta": ||dF * th||_2, "joint_graph": ||dF||_2}.

    dbeta = sum over N*T*V*V terms dF * th of either sign, and dJ[u, v] = sum over the N*T frames of dF[n, t, u, v]
    of either sign; when they nearly cancel (e.g. a few frames), their relative error is meaningless, so each is
    measured against the root-sum-square of its terms (the scale of the rounding error of any summation order).
    Computed in float64; grad_out, x: (N, C, T, V); p, q: (N, T, V).
    """
    x, grad_out = x.double(), grad_out.double()
    d_frame = torch.einsum("nctu,nctv->ntuv", grad_out, x)
    th = torch.tanh(p.double()[..., :, None] - q.double()[..., None, :])
    return {"beta": (d_frame * th).norm().item(), "joint_graph": d_frame.norm().item()}
