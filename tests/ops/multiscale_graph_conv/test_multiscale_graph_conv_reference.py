"""The plain-PyTorch reference of trgnet_fast.ops.multiscale_graph_conv (``reference.py``, the yardstick of every
other test) against an explicit evaluation of the published formula, scale by scale, in float64."""
from __future__ import annotations

import pytest
import torch

from multiscale_cases import make_inputs
from op_checks import rel_err
from trgnet_fast.ops.multiscale_graph_conv.reference import multiscale_graph_conv_reference


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 3, 7), (1, 2, 1, 17, 13, 4)])
def test_reference_matches_explicit_formula(shape):
    """Y[n,o,t,v] = b[o] + sum_{s,c,u} W[o, s*C+c] A[s*V+v, u] X[n,c,t,u], evaluated scale by scale."""
    N, C, T, V, S, O = shape
    x, a, w, b = make_inputs(*shape)
    expected = b[None, :, None, None].expand(N, O, T, V).clone()
    for s in range(S):
        a_s = a[s * V:(s + 1) * V]  # (V, V): [v, u]
        w_s = w[:, s * C:(s + 1) * C]  # (O, C)
        z = torch.einsum("vu,nctu->nctv", a_s, x)
        expected += torch.einsum("oc,nctv->notv", w_s, z)
    got = multiscale_graph_conv_reference(x, a, w, b)
    assert rel_err(got, expected) < 1e-13
    # the 4-D conv weight is accepted too
    assert rel_err(multiscale_graph_conv_reference(x, a, w[:, :, None, None], b), expected) < 1e-13
