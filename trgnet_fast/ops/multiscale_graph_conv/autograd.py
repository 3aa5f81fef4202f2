"""Autograd of the multi-scale graph conv, shared by the native op ``trgnet::multiscale_graph_conv`` and the
Triton op ``trgnet_triton::multiscale_graph_conv`` (one schema): fake (meta) kernels, the saved context and the
backward, which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import make_backward, register_native_op
from trgnet_fast.ops.multiscale_graph_conv.validation import validate_inputs

OP_NAME = "multiscale_graph_conv"


def fake_forward(x, adjacency, weight, bias):
    validate_inputs(f"trgnet::{OP_NAME}", x, adjacency, weight, bias)  # dtypes, shapes: the C++ checks never run here
    n, _, t, v = x.shape
    return x.new_empty((n, weight.shape[0], t, v))


def fake_backward(grad_out, x, adjacency, weight):
    return (torch.empty_like(x), torch.empty_like(adjacency), torch.empty_like(weight),
            weight.new_empty((weight.shape[0],)))


def setup_context(ctx, inputs, output):
    """Saves x, adjacency and weight (the bias gradient needs none)."""
    x, adjacency, weight, _bias = inputs
    ctx.save_for_backward(x, adjacency, weight)


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::multiscale_graph_conv`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.multiscale_graph_conv_backward), setup_context)


_native.on_load(register_native)
