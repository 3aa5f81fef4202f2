"""Fused multi-scale graph convolution: the front end of TRG-Net's SP block (reference-spec §2.2;
issue 5, op 1).

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

Backends: ``torch`` (the reference below: the published computation, any device/dtype) and
``triton`` (``trgnet_fast.triton.multiscale_graph_conv``: CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``; the (N, S*C, T, V) support never reaches global memory; fp32
accumulation; deterministic). Both are differentiable w.r.t. x, adjacency, weight and bias.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trgnet_fast.backend import implemented_backends, register_op, requested_backend, resolve_backend

OP_NAME = "multiscale_graph_conv"
register_op(OP_NAME, ("triton",))


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

def _shape(t) -> tuple:
    return tuple(t.shape)


def validate_inputs(x, adjacency, weight, bias) -> None:
    """Raise ``ValueError`` naming the argument, what is expected and what was received."""
    pre = "multiscale_graph_conv"
    for name, t in (("x", x), ("adjacency", adjacency), ("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{pre}: {name}: expected a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{pre}: x: expected a 4-D tensor (N, C, T, V), got shape {_shape(x)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{pre}: x: expected a floating dtype, got {x.dtype}")
    n, c, t, v = x.shape
    if v == 0 or c == 0:
        raise ValueError(f"{pre}: x: expected C >= 1 and V >= 1, got shape {_shape(x)}")
    if adjacency.dim() != 2 or adjacency.shape[1] != v or adjacency.shape[0] == 0 \
            or adjacency.shape[0] % v != 0:
        raise ValueError(f"{pre}: adjacency: expected shape (S*V, V) with V = {v} (from x) and S >= 1, "
                         f"got {_shape(adjacency)}")
    s = adjacency.shape[0] // v
    w_ok = weight.dim() == 2 or (weight.dim() == 4 and weight.shape[2:] == (1, 1))
    if not w_ok or weight.shape[1] != s * c or weight.shape[0] == 0:
        raise ValueError(f"{pre}: weight: expected shape (C_out, S*C) = (C_out, {s * c}) (S = {s}, C = {c}) "
                         f"or (C_out, {s * c}, 1, 1), got {_shape(weight)}")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"{pre}: bias: expected shape (C_out,) = ({weight.shape[0]},), got {_shape(bias)}")
    for name, tt in (("adjacency", adjacency), ("weight", weight), ("bias", bias)):
        if tt.dtype != x.dtype:
            raise ValueError(f"{pre}: {name}: expected dtype {x.dtype} (same as x), got {tt.dtype}")
        if tt.device != x.device:
            raise ValueError(f"{pre}: {name}: expected device {x.device} (same as x), got {tt.device}")


# --------------------------------------------------------------------------------------------
# Dispatch

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
        backend: "auto" | "torch" | "triton" | None (None: ``$TRGNET_BACKEND``, else auto).

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
    if impl == "triton":
        return _triton_impl(x, adjacency, weight, bias)
    raise AssertionError(impl)


@torch.compiler.assume_constant_result
def model_backend(backend: str | None, device: torch.device | str) -> str:
    """The backend the model's SP block uses for this op, given the model-wide ``backend``.

    Rule: a model-wide backend that does not implement this op (e.g. "cuda") runs the op's torch
    reference (the published computation) instead of raising; "auto" resolves as usual (triton on
    CUDA when usable); an implemented explicit backend ("torch", "triton") is used (and raises when
    not usable on ``device``).
    """
    name = requested_backend(backend)
    if name != "auto" and name not in implemented_backends(OP_NAME):
        return "torch"
    return resolve_backend(OP_NAME, name, device)
