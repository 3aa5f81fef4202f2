"""Error measure, gradient runner and precision switch shared by the fused-op tests."""
from __future__ import annotations

import contextlib

import torch

# fp32 parity tolerance against float64 by PyTorch's float32 matmul precision (docs/architecture.md#parity): IEEE fp32
# dots ("highest", the default) or TF32 tensor-core dots ("high"; the Triton graph convs follow it)
FP32_TOL = {"highest": 1e-5, "high": 1e-3}
# a TF32 dot of random normal data is off by ~1e-4 relative; IEEE fp32 by ~1e-7: above this, TF32 ran
TF32_ENGAGED = 1e-6


@contextlib.contextmanager
def float32_matmul_precision(value: str):
    """``torch.set_float32_matmul_precision(value)`` inside the block, the previous value restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def rel_err(x, ref, floor=0.0):
    """||x - ref|| / max(||ref||, floor), in float64."""
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).norm() / ref.norm().clamp_min(max(floor, 1e-300))).item()


def run_with_grads(fn, inputs, grad_out):
    """(out, grads) of ``fn(*inputs)`` on fresh leaf copies (clone keeps the strides of dense views), for
    the cotangent ``grad_out``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return out.detach(), grads


def assert_bitwise_deterministic(forward, backward, inputs, backward_inputs):
    """Two runs of ``forward(*inputs)`` and of ``backward(grad_out, *backward_inputs)`` agree bit for bit and
    are finite; returns the forward output."""
    y1, y2 = forward(*inputs), forward(*inputs)
    assert torch.isfinite(y1).all() and torch.equal(y1, y2)
    g = torch.randn_like(y1)
    for t1, t2 in zip(backward(g, *backward_inputs), backward(g, *backward_inputs)):
        assert torch.isfinite(t1).all() and torch.equal(t1, t2)
    return y1


def poison_allocator(*shapes, dtype=torch.float32, device="cuda"):
    """Fill blocks of the caching allocator with NaN so that outputs allocated next start as NaN (a kernel
    that leaves an element unwritten then shows up as a non-finite output)."""
    blocks = [torch.full(s, float("nan"), dtype=dtype, device=device) for s in shapes]
    del blocks


def assert_compiled_matches_eager(model, inputs, tol):
    """``torch.compile(model, fullgraph=True)`` traces without a graph break and gives eager's output and the
    gradients (of the sum of squares) w.r.t. the parameters and the inputs that require grad, within ``tol``."""
    leaves = [t for t in inputs if t.requires_grad] + list(model.parameters())
    eager = model(*inputs)
    eager_grads = torch.autograd.grad(eager.square().sum(), leaves)
    out = torch.compile(model, fullgraph=True)(*inputs)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    assert rel_err(out, eager) <= tol
    for i, (g, e) in enumerate(zip(grads, eager_grads)):
        assert rel_err(g, e) <= tol, f"gradient {i} of {len(leaves)}"
