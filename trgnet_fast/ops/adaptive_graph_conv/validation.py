"""The one argument check of the adaptive graph conv: the public function runs it (reference and native
backends), the raw Triton ops run it with ``kernel=True`` (adding what their kernels index: beta of shape (1,),
contiguous tensors). Shapes, dtypes and devices only, so it also runs on the FakeTensors of
torch.compile. Errors are ``ValueError``s naming the op, the argument, what is expected and what was
received."""
from __future__ import annotations

from trgnet_fast.ops._checks import (
    check_contiguous, check_leading_tensor, check_same_dtype_device, check_shape, shape_of)

LAYOUTS = {"p": "(N, T, V)", "q": "(N, T, V)", "channel_graph": "(N, C, V, V)", "joint_graph": "(V, V)"}


def validate_inputs(op: str, x, p, q, beta, channel_graph, joint_graph, kernel: bool = False) -> None:
    """x (N, C, T, V) with N, C, V >= 1; p, q (N, T, V); beta (1,) (or () unless ``kernel``); channel_graph
    (N, C, V, V); joint_graph (V, V); one floating dtype and device."""
    named = (("x", x), ("p", p), ("q", q), ("beta", beta), ("channel_graph", channel_graph),
             ("joint_graph", joint_graph))
    check_leading_tensor(op, named, "(N, C, T, V)")
    n, c, t, v = x.shape
    if v == 0 or c == 0 or n == 0:
        raise ValueError(f"{op}: x: expected N, C, V >= 1, got shape {shape_of(x)}")
    expected = {"p": (n, t, v), "q": (n, t, v), "channel_graph": (n, c, v, v), "joint_graph": (v, v)}
    for name, tensor in named[1:]:
        if name == "beta":
            if kernel:
                check_shape(op, "beta", beta, (1,), "(1,)")
            elif beta.numel() != 1 or beta.dim() > 1:
                raise ValueError(f"{op}: beta: expected shape (1,) or (), got {shape_of(beta)}")
        elif shape_of(tensor) != expected[name]:
            raise ValueError(f"{op}: {name}: expected shape {LAYOUTS[name]} = {expected[name]} "
                             f"(from x {shape_of(x)}), got {shape_of(tensor)}")
    check_same_dtype_device(op, named)
    if kernel:
        for name, tensor in named:
            check_contiguous(op, name, tensor)


def validate_backward_inputs(op: str, grad_out, x, p, q, beta, channel_graph, joint_graph) -> None:
    """As ``validate_inputs(kernel=True)``, and grad_out (N, C, T, V) like x, contiguous."""
    validate_inputs(op, x, p, q, beta, channel_graph, joint_graph, kernel=True)
    check_shape(op, "grad_out", grad_out, x.shape, "(N, C, T, V) of x")
    check_same_dtype_device(op, (("x", x), ("grad_out", grad_out)))
    check_contiguous(op, "grad_out", grad_out)
