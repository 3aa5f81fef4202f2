"""Fused multi-scale graph convolution: the front end of TRG-Net's SP block
(docs/model.md#multi-scale-graph-convolution).

    Y[n, o, t, v] = b[o] + sum_{s, c, u} W[o, s*C + c] * A[s*V + v, u] * X[n, c, t, u]

i.e. the S-scale aggregation over joints (einsum with the (S*V, V) stack of normalised k-hop
adjacencies + learnable residual), the scale-major stacking of the S*C channels (channel index
s*C + c) and the 1x1 conv with bias, in one op.

Shapes (all one floating dtype, one device):
    x:         (N, C, T, V)   features, any strides (the model's layout after the (V, T) swap)
    adjacency: (S*V, V)       A_powers + A_res, row s*V + v = scale s, output joint v
    weight:    (C_out, S*C)   the 1x1 conv weight viewed 2-D ((C_out, S*C, 1, 1) is accepted too)
    bias:      (C_out,)
    out:       (N, C_out, T, V), dtype of x

Backends: ``torch`` (the reference below: the published computation, any device/dtype),
``triton`` (``trgnet_fast.triton.multiscale_graph_conv``: CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``) and ``cuda`` (the compiled extension, ``torch.ops.trgnet.multiscale_graph_conv``:
CUDA kernels for CUDA tensors with V <= 64, C++ kernels for CPU tensors). The fused backends never
build the (N, S*C, T, V) support in global memory, accumulate in fp32 (fp64 for float64 inputs) and
are deterministic. All are differentiable w.r.t. x, adjacency, weight and bias.

Native op schemas (registered by the C++ library, ``TORCH_LIBRARY_FRAGMENT(trgnet, m)``; the
Triton ops ``trgnet_triton::`` have the same)::

    trgnet::multiscale_graph_conv(Tensor x, Tensor adjacency, Tensor weight, Tensor bias) -> Tensor
    trgnet::multiscale_graph_conv_backward(Tensor grad_out, Tensor x, Tensor adjacency, Tensor weight)
        -> (Tensor grad_x, Tensor grad_adjacency, Tensor grad_weight, Tensor grad_bias)

The native ops take contiguous tensors of one dtype on one device, weight 2-D (C_out, S*C); the
gradients have the shape and dtype of their inputs (grad_bias: (C_out,), dtype of weight).
:func:`multiscale_graph_conv` validates, makes the inputs contiguous and views the weight 2-D.
On CUDA tensors the native backward also needs one frame of X, grad_out and two (C, V) buffers
plus A_s and W_s to fit 96 KiB of shared memory (C, C_out up to ~100 at V = 25 in fp32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._autograd import make_backward, register_native_op
from trgnet_fast.ops._checks import check_leading_tensor, check_same_dtype_device, shape_of

OP_NAME = "multiscale_graph_conv"
register_op(OP_NAME, ("cuda", "triton"))


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


# --------------------------------------------------------------------------------------------
# Input validation (before any backend runs)

def validate_inputs(x, adjacency, weight, bias) -> None:
    """Raise ``ValueError`` naming the argument, what is expected and what was received."""
    pre = "multiscale_graph_conv"
    named = (("x", x), ("adjacency", adjacency), ("weight", weight), ("bias", bias))
    check_leading_tensor(pre, named, "(N, C, T, V)")
    n, c, t, v = x.shape
    if v == 0 or c == 0:
        raise ValueError(f"{pre}: x: expected C >= 1 and V >= 1, got shape {shape_of(x)}")
    if adjacency.dim() != 2 or adjacency.shape[1] != v or adjacency.shape[0] == 0 \
            or adjacency.shape[0] % v != 0:
        raise ValueError(f"{pre}: adjacency: expected shape (S*V, V) with V = {v} (from x) and S >= 1, "
                         f"got {shape_of(adjacency)}")
    s = adjacency.shape[0] // v
    w_ok = weight.dim() == 2 or (weight.dim() == 4 and weight.shape[2:] == (1, 1))
    if not w_ok or weight.shape[1] != s * c or weight.shape[0] == 0:
        raise ValueError(f"{pre}: weight: expected shape (C_out, S*C) = (C_out, {s * c}) (S = {s}, C = {c}) "
                         f"or (C_out, {s * c}, 1, 1), got {shape_of(weight)}")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"{pre}: bias: expected shape (C_out,) = ({weight.shape[0]},), got {shape_of(bias)}")
    check_same_dtype_device(pre, named)


# --------------------------------------------------------------------------------------------
# Native op: fake (meta) kernels and autograd, registered once the extension is loaded

def _fake_forward(x, adjacency, weight, bias):
    n, _, t, v = x.shape
    return x.new_empty((n, weight.shape[0], t, v))


def _fake_backward(grad_out, x, adjacency, weight):
    return (torch.empty_like(x), torch.empty_like(adjacency), torch.empty_like(weight),
            weight.new_empty((weight.shape[0],)))


def save_backward_context(ctx, inputs, output):
    """Autograd context of both forward ops (native and Triton): same schema, same saves."""
    x, adjacency, weight, _bias = inputs
    ctx.save_for_backward(x, adjacency, weight)


def register_native() -> None:
    """Fake kernels and autograd of the native ops; called by ``trgnet_fast._native`` after loading."""
    register_native_op(OP_NAME, _fake_forward, _fake_backward,
                       make_backward(torch.ops.trgnet.multiscale_graph_conv_backward), save_backward_context)


# --------------------------------------------------------------------------------------------
# Dispatch

def _native_impl(x, adjacency, weight, bias):
    weight2 = weight.reshape(weight.shape[0], -1)
    return _native.ops().multiscale_graph_conv(
        x.contiguous(), adjacency.contiguous(), weight2.contiguous(), bias.contiguous())


def _triton_impl(x, adjacency, weight, bias):
    from trgnet_fast.triton import multiscale_graph_conv as _kernels  # noqa: F401 (registers the op)

    weight2 = weight.reshape(weight.shape[0], -1)
    return torch.ops.trgnet_triton.multiscale_graph_conv(
        x, adjacency.contiguous(), weight2.contiguous(), bias.contiguous())


def multiscale_graph_conv(x, adjacency, weight, bias, backend: str | None = None):
    """Fused S-scale graph aggregation + scale-major stacking + 1x1 conv (formula in the module docstring).

    Args:
        x: (N, C, T, V) floating; any strides.
        adjacency: (S*V, V), same dtype/device as x.
        weight: (C_out, S*C) or (C_out, S*C, 1, 1), same dtype/device.
        bias: (C_out,), same dtype/device.
        backend: "auto" | "torch" | "triton" | "cuda" | None (None: ``$TRGNET_BACKEND``, else auto).

    Returns:
        (N, C_out, T, V), dtype of x. Differentiable w.r.t. x, adjacency, weight and bias.

    Raises:
        ValueError: bad shapes / dtypes / devices (checked before any backend runs).
        RuntimeError: the requested backend is not implemented or not usable.
    """
    validate_inputs(x, adjacency, weight, bias)
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    if impl == "torch":
        return multiscale_graph_conv_reference(x, adjacency, weight, bias)
    if impl == "cuda":
        return _native_impl(x, adjacency, weight, bias)
    if impl == "triton":
        return _triton_impl(x, adjacency, weight, bias)
    raise AssertionError(impl)
