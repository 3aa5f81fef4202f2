"""Inputs, references and checks shared by the linear-attention tests (``tests/ops/linear_attention/``: reference,
fused backends, validation, property-based)."""
from __future__ import annotations

import torch

from op_checks import assert_compiled_matches_eager, rel_err
from trgnet_fast.ops.linear_attention import linear_attention
from trgnet_fast.ops.linear_attention.reference import gradient_error_floors, linear_attention_reference

EPS = 1e-6


def make_mask(kind: str, N: int, T: int, device="cpu"):
    """(N, T) bool key mask: "none" (None), "random" (~60 % kept, >= 1 per sample), "tail" (random
    lengths), "one" (only the last frame)."""
    if kind == "none":
        return None
    if kind == "random":
        mask = torch.rand(N, T, device=device) < 0.6
        mask[torch.arange(N, device=device), torch.randint(T, (N,), device=device)] = True
        return mask
    if kind == "tail":
        lengths = torch.randint(1, T + 1, (N,), device=device)
        return torch.arange(T, device=device)[None, :] < lengths[:, None]
    if kind == "one":
        mask = torch.zeros(N, T, dtype=torch.bool, device=device)
        mask[:, T - 1] = True
        return mask
    raise ValueError(kind)


def make_inputs(N, T, H, D, E, dtype=torch.float64, device="cpu", masked=False, requires_grad=False):
    """Fresh q, k (N, T, H, D), v (N, T, H, E) and a random key mask (or None)."""
    q = torch.randn(N, T, H, D, dtype=torch.float64, device=device)
    k = torch.randn(N, T, H, D, dtype=torch.float64, device=device)
    v = torch.randn(N, T, H, E, dtype=torch.float64, device=device)
    q, k, v = (t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v))
    return q, k, v, make_mask("random" if masked else "none", N, T, device)


def grad_floors(grad_out, q, k, v, mask) -> dict[str, float]:
    """Denominator floor of each gradient's relative error, by name "q", "k", "v" (``gradient_error_floors``)."""
    return gradient_error_floors(grad_out, q, k, v, mask, EPS)


def reference_grads(q, k, v, key_mask, grad_out, dtype=torch.float64):
    """Output and gradients of the reference evaluated in ``dtype``."""
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
    out = linear_attention_reference(*leaves, key_mask, EPS)
    out.backward(grad_out.to(dtype))
    return out.detach(), [t.grad for t in leaves]


def state_reference(k, v, key_mask=None):
    """kv_state (N, H, D, E) and key_sum (N, H, D) (without eps), float64."""
    pk = torch.sigmoid(k.double())
    if key_mask is not None:
        pk = pk * key_mask[:, :, None, None].double()
    return torch.einsum("nshd,nshe->nhde", pk, v.double()), pk.sum(1)


def check_forward_backward(q, k, v, mask, tol, backend, poison=lambda: None):
    """``backend``'s output and gradients vs the float64 reference (finite, dtype kept, within tol; the gradient
    errors against max(||ref||, ``grad_floors``)). ``poison()`` runs right before the fused call (NaN-filled memory
    for its outputs)."""
    N, T, H, D = q.shape
    E = v.shape[3]
    grad_out = torch.randn(N, T, H, E, dtype=torch.float64, device=q.device)
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    floors = grad_floors(grad_out, q, k, v, mask)
    poison()
    out = linear_attention(q, k, v, mask, EPS, backend=backend)
    assert out.dtype == q.dtype and out.shape == ref.shape
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) <= tol
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(q.dtype))
    for name, g, r in zip("qkv", grads, ref_grads):
        assert g.dtype == q.dtype and g.shape == r.shape, name
        assert torch.isfinite(g).all(), name
        assert rel_err(g, r, floors[name]) <= tol, (name, rel_err(g, r, floors[name]))


class TinyAttention(torch.nn.Module):
    """Linear projections around a linear-attention core ``attend(q, k, v, mask) -> (N, T, H, E)``, as
    inside TRGNet: x (N, T, C), mask (N, T) bool -> (N, T, C)."""

    def __init__(self, attend, channels=64, heads=4):
        super().__init__()
        self.attend, self.heads = attend, heads
        self.q, self.k, self.v = (torch.nn.Linear(channels, channels) for _ in range(3))
        self.o = torch.nn.Linear(channels, channels)

    def forward(self, x, mask):
        N, T, C = x.shape
        split = lambda t: t.view(N, T, self.heads, C // self.heads)  # noqa: E731
        a = self.attend(split(self.q(x)), split(self.k(x)), split(self.v(x)), mask)
        return self.o(a.reshape(N, T, C))


def assert_attention_compiles(attend, device, T=257):
    """torch.compile(fullgraph=True) of a TinyAttention around ``attend`` matches eager (output, input and
    parameter gradients) within 1e-5, with masked keys."""
    model = TinyAttention(attend).to(device)
    x = torch.randn(2, T, 64, device=device, requires_grad=True)
    mask = torch.rand(2, T, device=device) < 0.8
    assert_compiled_matches_eager(model, (x, mask), 1e-5)
