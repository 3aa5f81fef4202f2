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

Backends: ``torch`` (``reference.py``: the published computation, any device/dtype),
``triton`` (``triton_kernels.py``: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``) and ``cuda`` (the compiled extension, ``torch.ops.trgnet.multiscale_graph_conv``:
CUDA kernels for CUDA tensors with V <= 64, C++ kernels for CPU tensors). The fused backends never
build the (N, S*C, T, V) support in global memory, accumulate in fp32 (fp64 for float64 inputs) and
are deterministic. All are differentiable w.r.t. x, adjacency, weight and bias.

Native op schemas (registered by the C++ library, csrc/multiscale_graph_conv.cpp; the Triton ops
``trgnet_triton::`` have the same)::

    trgnet::multiscale_graph_conv(Tensor x, Tensor adjacency, Tensor weight, Tensor bias) -> Tensor
    trgnet::multiscale_graph_conv_backward(Tensor grad_out, Tensor x, Tensor adjacency, Tensor weight)
        -> (Tensor grad_x, Tensor grad_adjacency, Tensor grad_weight, Tensor grad_bias)

The native ops take contiguous tensors of one dtype on one device, weight 2-D (C_out, S*C); the
gradients have the shape and dtype of their inputs (grad_bias: (C_out,), dtype of weight).
:func:`multiscale_graph_conv` validates, makes the inputs contiguous and views the weight 2-D.
On CUDA tensors the native backward also needs one frame of X, grad_out and two (C, V) buffers
plus A_s and W_s to fit 96 KiB of shared memory (C, C_out up to ~100 at V = 25 in fp32).

Files: ``reference.py``, ``validation.py`` (the one argument check, shared with the raw Triton ops),
``autograd.py`` (fake kernels, autograd context and backward of both registrations), ``triton_kernels.py``,
``spec.py`` (the registry entry).
"""
from __future__ import annotations

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty, check_tensor_arguments
from trgnet_fast.ops.multiscale_graph_conv.autograd import OP_NAME
from trgnet_fast.ops.multiscale_graph_conv.reference import multiscale_graph_conv_reference
from trgnet_fast.ops.multiscale_graph_conv.validation import validate_inputs

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def _weight_2d(weight):
    """(C_out, S*C, 1, 1) -> (C_out, S*C), contiguous; any other shape is left for the validation to name."""
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        weight = weight.reshape(weight.shape[0], -1)
    return weight.contiguous()


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
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices
            (checked once, before any kernel runs: here, or for the
            triton backend by the Triton op itself).
        RuntimeError: the requested backend is not implemented or not usable.
    """
    check_tensor_arguments(OP_NAME, (("x", x), ("adjacency", adjacency), ("weight", weight), ("bias", bias)))
    check_nonempty(OP_NAME, (("x", x, "(N, C, T, V)"),))
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    if impl == "triton":
        from trgnet_fast.ops.multiscale_graph_conv.triton_kernels import multiscale_graph_conv_triton

        return multiscale_graph_conv_triton(x, adjacency.contiguous(), _weight_2d(weight), bias.contiguous())
    validate_inputs(OP_NAME, x, adjacency, weight, bias)
    if impl == "torch":
        return multiscale_graph_conv_reference(x, adjacency, weight, bias)
    if impl == "cuda":
        return _native.ops().multiscale_graph_conv(
            x.contiguous(), adjacency.contiguous(), _weight_2d(weight), bias.contiguous())
    raise AssertionError(impl)
