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

Backends: ``torch`` (``reference.py``: the published computation, any device/dtype), ``triton``
(``triton_kernels.py``: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``)
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

Files: ``reference.py``, ``validation.py`` (the one argument check, shared with the raw Triton ops),
``autograd.py`` (fake kernels, autograd context and backward of both registrations), ``triton_kernels.py``,
``spec.py`` (the registry entry).
"""
from __future__ import annotations

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty, check_tensor_arguments
from trgnet_fast.ops.adaptive_graph_conv.autograd import OP_NAME
from trgnet_fast.ops.adaptive_graph_conv.reference import adaptive_graph_conv_reference
from trgnet_fast.ops.adaptive_graph_conv.validation import validate_inputs

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def _kernel_inputs(x, p, q, beta, channel_graph, joint_graph):
    """Contiguous inputs, a 0-d beta as (1,) (any other beta is left for the validation to name)."""
    beta = beta.reshape(1) if beta.dim() == 0 else beta
    return tuple(t.contiguous() for t in (x, p, q, beta, channel_graph, joint_graph))


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
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices
            (checked once, before any kernel runs: here, or for the
            triton backend by the Triton op itself).
        RuntimeError: the requested backend is not usable.

    Non-contiguous inputs are accepted; the fused backends copy them to contiguous memory.
    """
    inputs = (x, p, q, beta, channel_graph, joint_graph)
    check_tensor_arguments(OP_NAME, tuple(zip(("x", "p", "q", "beta", "channel_graph", "joint_graph"), inputs)))
    check_nonempty(OP_NAME, (("x", x, "(N, C, T, V)"),))
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    if impl == "triton":
        from trgnet_fast.ops.adaptive_graph_conv.triton_kernels import adaptive_graph_conv_triton

        return adaptive_graph_conv_triton(*_kernel_inputs(*inputs))
    validate_inputs(OP_NAME, *inputs)
    if impl == "torch":
        return adaptive_graph_conv_reference(*inputs)
    if impl == "cuda":
        return _native.ops().adaptive_graph_conv(*_kernel_inputs(*inputs))
    raise AssertionError(impl)
