"""Autograd of the adaptive graph conv, shared by the native op ``trgnet::adaptive_graph_conv`` and the Triton
op ``trgnet_triton::adaptive_graph_conv`` (one schema): fake (meta) kernels, the saved context and the backward,
which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import make_backward, register_native_op
from trgnet_fast.ops.adaptive_graph_conv.validation import validate_inputs

OP_NAME = "adaptive_graph_conv"


def fake_forward(x, p, q, beta, channel_graph, joint_graph):
    # dtypes, shapes: the C++ checks never run here
    validate_inputs(f"trgnet::{OP_NAME}", x, p, q, beta, channel_graph, joint_graph)
    return torch.empty_like(x)


def fake_backward(grad_out, x, p, q, beta, channel_graph, joint_graph):
    return tuple(torch.empty_like(t) for t in (x, p, q, beta, channel_graph, joint_graph))


def setup_context(ctx, inputs, output):
    """Saves every input (the backward rebuilds the frame graph from p, q, beta, J)."""
    ctx.save_for_backward(*inputs)


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::adaptive_graph_conv`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.adaptive_graph_conv_backward), setup_context)


_native.on_load(register_native)
