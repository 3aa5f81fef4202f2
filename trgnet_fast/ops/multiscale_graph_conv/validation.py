"""The one argument check of the multi-scale graph conv: the public function runs it (reference and native
backends), the raw Triton ops run it with ``kernel=True`` (adding what their kernels index: a 2-D weight,
contiguous adjacency/weight/bias; x and grad_out may have any strides). Shapes, dtypes and
devices only, so it also runs on the FakeTensors of torch.compile. Errors are ``ValueError``s naming the op, the
argument, what is expected and what was received."""
from __future__ import annotations

from trgnet_fast.ops._checks import (
    check_contiguous, check_leading_tensor, check_same_dtype_device, check_shape, shape_of)


def validate_inputs(op: str, x, adjacency, weight, bias=None, kernel: bool = False) -> None:
    """x (N, C, T, V) with C, V >= 1; adjacency (S*V, V) with S >= 1; weight (C_out, S*C) with C_out >= 1, or
    (C_out, S*C, 1, 1) unless ``kernel``; bias (C_out,) (when given); one floating dtype and device."""
    named = [("x", x), ("adjacency", adjacency), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    check_leading_tensor(op, named, "(N, C, T, V)")
    n, c, t, v = x.shape
    if v == 0 or c == 0:
        raise ValueError(f"{op}: x: expected C >= 1 and V >= 1, got shape {shape_of(x)}")
    if adjacency.dim() != 2 or adjacency.shape[1] != v or adjacency.shape[0] == 0 or adjacency.shape[0] % v != 0:
        raise ValueError(f"{op}: adjacency: expected shape (S*V, V) with V = {v} (from x) and S >= 1, "
                         f"got {shape_of(adjacency)}")
    s = adjacency.shape[0] // v
    w_ok = weight.dim() == 2 or (not kernel and weight.dim() == 4 and weight.shape[2:] == (1, 1))
    if not w_ok or weight.shape[1] != s * c or weight.shape[0] == 0:
        four_d = "" if kernel else f" or (C_out, {s * c}, 1, 1)"
        raise ValueError(f"{op}: weight: expected shape (C_out, S*C) = (C_out, {s * c}) (S = {s}, C = {c}){four_d} "
                         f"with C_out >= 1, got {shape_of(weight)}")
    if bias is not None:
        check_shape(op, "bias", bias, weight.shape[:1], "(C_out,)")
    check_same_dtype_device(op, named)
    if kernel:
        for name, tensor in named[1:]:
            check_contiguous(op, name, tensor)


def validate_backward_inputs(op: str, grad_out, x, adjacency, weight) -> None:
    """As ``validate_inputs(kernel=True)`` without bias, and grad_out (N, C_out, T, V) in x's dtype and device."""
    validate_inputs(op, x, adjacency, weight, kernel=True)
    check_shape(op, "grad_out", grad_out, (x.shape[0], weight.shape[0], x.shape[2], x.shape[3]),
                "(N, C_out, T, V) of the output")
    check_same_dtype_device(op, (("x", x), ("grad_out", grad_out)))
