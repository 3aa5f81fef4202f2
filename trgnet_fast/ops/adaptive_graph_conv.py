"""Fused adaptive graph convolution: the aggregation core of TRG-Net's CTRGC with the text-derived
joint graph (docs/model.md#ctrgc).

    F[n, t, u, v] = beta * tanh(p[n, t, u] - q[n, t, v]) + J[u, v]          frame graph (N, T, V, V)
    Y[n, c, t, u] = sum_v (F[n, t, u, v] + G[n, c, u, v]) * X[n, c, t, v]

X is CTRGC's conv3 output, p and q the channel means of its two 8-channel projections (conv1, conv2),
G = alpha * conv4(tanh(a_bar_u - b_bar_v)) + J the per-(sample, channel) graph and J the TJG. The
published code materialises F (N, T, V, V) and runs two batched matmuls; the fused kernels build F on
the fly per frame and add both aggregations in one pass, so F never reaches global memory.

Shapes (all one floating dtype, one device):
    x:             (N, C, T, V)
    p, q:          (N, T, V)
    beta:          (1,) (a 0-d tensor is accepted by :func:`adaptive_graph_conv`)
    channel_graph: (N, C, V, V)   G, J already included (as the model builds it)
    joint_graph:   (V, V)         J
    out:           (N, C, T, V), dtype of x

Gradients (w.r.t. every input), with dF[n,t,u,v] = sum_c dY[n,c,t,u] X[n,c,t,v] and
th = tanh(p_u - q_v):
    dX[n,c,t,v] = sum_u (F + G)[.., u, v] dY[n,c,t,u]      dG[n,c,u,v] = sum_t dY[n,c,t,u] X[n,c,t,v]
    dJ = sum_{n,t} dF      dbeta = sum dF * th      dp[n,t,u] = beta sum_v dF (1 - th^2)      dq = -(same over u)

Backends: ``torch`` (the reference below: the published computation, any device/dtype), ``triton``
(``trgnet_fast.triton.adaptive_graph_conv``: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``)
and ``cuda`` (the compiled extension: CUDA kernels for CUDA tensors, C++ kernels for CPU tensors).
The fused backends accumulate in fp32 (fp64 for float64 inputs), deterministically.

Op schemas (native ``trgnet::`` registered by the C++ library; Triton ``trgnet_triton::`` the same)::

    adaptive_graph_conv(Tensor x, Tensor p, Tensor q, Tensor beta, Tensor channel_graph,
                        Tensor joint_graph) -> Tensor
    adaptive_graph_conv_backward(Tensor grad_out, Tensor x, Tensor p, Tensor q, Tensor beta,
                        Tensor channel_graph, Tensor joint_graph)
        -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)   # grads of x, p, q, beta, channel_graph, joint_graph

Both take contiguous tensors with beta of shape (1,); the gradients have the shape and dtype of their
inputs. :func:`adaptive_graph_conv` validates, makes inputs contiguous and dispatches.
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._autograd import make_backward, register_native_op
from trgnet_fast.ops._checks import check_leading_tensor, check_same_dtype_device, shape_of

OP_NAME = "adaptive_graph_conv"
register_op(OP_NAME, ("cuda", "triton"))


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
    """Denominator floors for relative gradient errors: {"beta": ||dF * th||_2}.

    dbeta = sum over N*T*V*V terms dF * th of either sign; when they nearly cancel, its relative error
    is meaningless, so it is measured against the root-sum-square of the terms (the scale of the
    rounding error of any summation order). Computed in float64; grad_out, x: (N, C, T, V); p, q: (N, T, V).
    """
    x, grad_out = x.double(), grad_out.double()
    d_frame = torch.einsum("nctu,nctv->ntuv", grad_out, x)
    th = torch.tanh(p.double()[..., :, None] - q.double()[..., None, :])
    return {"beta": (d_frame * th).norm().item()}


# --------------------------------------------------------------------------------------------
# Input validation (before any backend runs)

def validate_inputs(x, p, q, beta, channel_graph, joint_graph) -> None:
    """Raise ``ValueError`` naming the argument, what is expected and what was received."""
    pre = "adaptive_graph_conv"
    named = (("x", x), ("p", p), ("q", q), ("beta", beta), ("channel_graph", channel_graph),
             ("joint_graph", joint_graph))
    check_leading_tensor(pre, named, "(N, C, T, V)")
    n, c, t, v = x.shape
    if v == 0 or c == 0 or n == 0:
        raise ValueError(f"{pre}: x: expected N, C, V >= 1, got shape {shape_of(x)}")
    expected = {"p": (n, t, v), "q": (n, t, v), "channel_graph": (n, c, v, v), "joint_graph": (v, v)}
    layouts = {"p": "(N, T, V)", "q": "(N, T, V)", "channel_graph": "(N, C, V, V)", "joint_graph": "(V, V)"}
    for name, tt in named[1:]:
        if name == "beta":
            if beta.numel() != 1 or beta.dim() > 1:
                raise ValueError(f"{pre}: beta: expected shape (1,) or (), got {shape_of(beta)}")
        elif shape_of(tt) != expected[name]:
            raise ValueError(f"{pre}: {name}: expected shape {layouts[name]} = {expected[name]} "
                             f"(from x {shape_of(x)}), got {shape_of(tt)}")
    check_same_dtype_device(pre, named)


# --------------------------------------------------------------------------------------------
# Native op: fake (meta) kernels and autograd, registered once the extension is loaded

def _fake_forward(x, p, q, beta, channel_graph, joint_graph):
    return torch.empty_like(x)


def _fake_backward(grad_out, x, p, q, beta, channel_graph, joint_graph):
    return tuple(torch.empty_like(t) for t in (x, p, q, beta, channel_graph, joint_graph))


def save_backward_context(ctx, inputs, output):
    """Autograd context of both forward ops (native and Triton): same schema, same saves."""
    ctx.save_for_backward(*inputs)


def register_native() -> None:
    """Fake kernels and autograd of the native ops; called by ``trgnet_fast._native`` after loading."""
    register_native_op(OP_NAME, _fake_forward, _fake_backward,
                       make_backward(torch.ops.trgnet.adaptive_graph_conv_backward), save_backward_context)


def _native_impl(*inputs):
    return _native.ops().adaptive_graph_conv(*inputs)


def _triton_impl(*inputs):
    from trgnet_fast.triton import adaptive_graph_conv as _kernels  # noqa: F401 (registers the op)

    return torch.ops.trgnet_triton.adaptive_graph_conv(*inputs)


def adaptive_graph_conv(x, p, q, beta, channel_graph, joint_graph, backend: str | None = None):
    """Frame-graph + channel-graph aggregation of CTRGC (formula in the module docstring).

    Args:
        x: (N, C, T, V) floating.
        p, q: (N, T, V), same dtype/device as x.
        beta: (1,) or () scalar tensor, same dtype/device.
        channel_graph: (N, C, V, V), same dtype/device (J included).
        joint_graph: (V, V), same dtype/device.
        backend: "auto" | "torch" | "triton" | "cuda" | None (None: ``$TRGNET_BACKEND``, else auto).

    Returns:
        (N, C, T, V), dtype of x. Differentiable w.r.t. every input.

    Raises:
        ValueError: bad shapes / dtypes / devices (checked before any backend runs).
        RuntimeError: the requested backend is not usable.

    Non-contiguous inputs are accepted; the fused backends copy them to contiguous memory.
    """
    validate_inputs(x, p, q, beta, channel_graph, joint_graph)
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    if impl == "torch":
        return adaptive_graph_conv_reference(x, p, q, beta, channel_graph, joint_graph)
    inputs = (x.contiguous(), p.contiguous(), q.contiguous(), beta.reshape(1).contiguous(),
              channel_graph.contiguous(), joint_graph.contiguous())
    if impl == "cuda":
        return _native_impl(*inputs)
    if impl == "triton":
        return _triton_impl(*inputs)
    raise AssertionError(impl)
