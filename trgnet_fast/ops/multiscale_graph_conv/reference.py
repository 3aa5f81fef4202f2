"""Plain-PyTorch reference of the multi-scale graph conv: the published computation (the yardstick of every
test, parity row and benchmark). Shapes in the package docstring (``trgnet_fast/ops/multiscale_graph_conv``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def multiscale_graph_conv_reference(x, adjacency, weight, bias):
    """The published computation (model/spatial.py before fusion), in the inputs' dtype.

    x: (N, C, T, V); adjacency: (S*V, V); weight: (C_out, S*C) or (C_out, S*C, 1, 1); bias: (C_out,).
    Returns (N, C_out, T, V).
    """
    n, c, t, v = x.shape
    num_scales = adjacency.shape[0] // v
    support = torch.einsum("su,nctu->ncts", adjacency, x)  # s = k * V + v
    # Channel index of the stacked scales is k * C + c (scale-major).
    support = support.view(n, c, t, num_scales, v).permute(0, 3, 1, 2, 4)
    support = support.reshape(n, num_scales * c, t, v)
    weight4 = weight if weight.dim() == 4 else weight.reshape(weight.shape[0], -1, 1, 1)
    return F.conv2d(support, weight4, bias)
