"""The plain-PyTorch reference of trgnet_fast.ops.adaptive_graph_conv (``reference.py``, the yardstick of every
other test) against the published CTRGC formulas (docs/model.md#ctrgc) evaluated element by element, and against
the model's CTRGC module."""
from __future__ import annotations

import math

import torch

from adaptive_cases import make_inputs
from op_checks import rel_err
from trgnet_fast.ops.adaptive_graph_conv.reference import adaptive_graph_conv_reference


def test_reference_matches_published_formula():
    """docs/model.md#ctrgc: G_f[n,t,u,v] = beta tanh(p[n,t,u] - q[n,t,v]) + J[u,v];
    y[n,c,t,u] = sum_v G_f[n,t,u,v] x[n,c,t,v] + sum_v G_c[n,c,u,v] x[n,c,t,v], element by element."""
    N, C, T, V = 2, 3, 4, 5
    x, p, q, beta, G, J = make_inputs(N, C, T, V)
    got = adaptive_graph_conv_reference(x, p, q, beta, G, J)
    b = beta.item()
    for n in range(N):
        for t in range(T):
            for u in range(V):
                frame = [b * math.tanh(p[n, t, u].item() - q[n, t, v].item()) + J[u, v].item() for v in range(V)]
                for c in range(C):
                    y = sum((frame[v] + G[n, c, u, v].item()) * x[n, c, t, v].item() for v in range(V))
                    assert abs(got[n, c, t, u].item() - y) <= 1e-12 * (1 + abs(y))


def test_reference_is_the_model_ctrgc_aggregation():
    """CTRGC(x) == op(conv3(x), mean conv1(x), mean conv2(x), beta, alpha conv4(...) + J, J)."""
    from trgnet_fast.model.spatial import CTRGC

    N, C, T, V = 2, 16, 5, 19
    module = CTRGC(C).double()
    x = torch.randn(N, C, T, V, dtype=torch.float64)
    joint = torch.rand(V, V, dtype=torch.float64)
    alpha, beta = torch.randn(1, dtype=torch.float64), torch.randn(1, dtype=torch.float64)
    a, b, x3 = module.conv1(x), module.conv2(x), module.conv3(x)
    relation = torch.tanh(a.mean(2)[..., :, None] - b.mean(2)[..., None, :])
    channel = alpha * module.conv4(relation) + joint
    expected = adaptive_graph_conv_reference(x3, a.mean(1), b.mean(1), beta, channel, joint)
    assert rel_err(module(x, joint, alpha, beta), expected) <= 1e-13
