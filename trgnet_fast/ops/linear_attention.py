"""Non-causal linear attention core of TRG-Net (docs/model.md#linear-attention).

For every sample n and head h, with phi = sigmoid:
    KV[d, e]  = sum_s m[s] * phi(k[s, d]) * v[s, e]
    ksum[d]   = sum_s m[s] * phi(k[s, d]) + eps          (eps on every element of the key sum)
    out[l, e] = (phi(q[l]) @ KV)[e] / (phi(q[l]) @ ksum)
m[s] = key_mask[n, s] when a key mask is given (mask-correct mode), else 1 (published mode:
padded frames take part in the sums).

Shapes: q, k: (N, T, H, D); v: (N, T, H, E); key_mask: (N, T) bool or None; out: (N, T, H, E).
This is the layout the Linear projections produce ((N, T, H*D) viewed as (N, T, H, D)), so no
transpose is needed around the op.

Backends: ``torch`` (the reference below, any device/dtype/size), ``cuda`` (the compiled
extension: ``torch.ops.trgnet.linear_attention``, CUDA kernels for CUDA tensors with D, E <= 64,
C++ kernels for CPU tensors) and ``triton`` (``torch.ops.trgnet_triton.linear_attention``, kernels
in ``trgnet_fast/triton/linear_attention.py``: CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``; same schemas, state dtypes and autograd as the native op; imported on
first use so that triton stays optional). The native op computes in fp32 (fp64 for float64
inputs) whatever the input dtype, deterministically, and is differentiable w.r.t. q, k and v
(``torch.library.register_autograd``); it works under ``torch.compile`` (``register_fake``).

Native op schemas (registered by the C++ library, ``TORCH_LIBRARY(trgnet, m)``)::

    trgnet::linear_attention(Tensor q, Tensor k, Tensor v, Tensor? key_mask, float eps)
        -> (Tensor out, Tensor kv_state, Tensor key_sum)
    trgnet::linear_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v,
        Tensor? key_mask, Tensor kv_state, Tensor key_sum, float eps)
        -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)

``kv_state`` (N, H, D, E) = KV and ``key_sum`` (N, H, D) = sum_s m[s] phi(k[s]) **without**
eps, both fp32 (fp64 for float64 inputs); they are saved for the backward and are not
differentiable. The native ops require contiguous inputs of one dtype on one device; the
:func:`linear_attention` wrapper makes non-contiguous inputs contiguous (a copy).
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops._checks import check_leading_tensor, check_same_dtype_device, shape_of

OP_NAME = "linear_attention"
register_op(OP_NAME, ("cuda", "triton"))


def linear_attention_reference(q, k, v, key_mask=None, eps: float = 1e-6):
    """Plain-PyTorch reference. q, k: (N, T, H, D); v: (N, T, H, E); key_mask: (N, T) or None.

    Returns out: (N, T, H, E), dtype of the inputs (computed in that dtype).
    """
    phi_q = torch.sigmoid(q)
    phi_k = torch.sigmoid(k)
    if key_mask is not None:
        phi_k = phi_k * key_mask[:, :, None, None].to(phi_k.dtype)
    kv = torch.einsum("nshd,nshe->nhde", phi_k, v)
    ksum = phi_k.sum(dim=1) + eps  # (N, H, D)
    num = torch.einsum("nlhd,nhde->nlhe", phi_q, kv)
    den = torch.einsum("nlhd,nhd->nlh", phi_q, ksum)
    return num / den[..., None]


# --------------------------------------------------------------------------------------------
# Input validation (before any backend runs)

def gradient_error_floors(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          key_mask=None, eps: float = 1e-6) -> dict[str, float]:
    """Denominator floors for the relative errors of dq, dk and dv: the float64 root-sum-square of the
    elementary products each gradient sums (g = grad_out, den[l] = phi(q[l]) . ksum, ksum = sum_s m phi(k) + eps):
        dq[l, d] = phi'(q[l, d]) (sum_{s,e} m phi(k[s, d]) v[s, e] g[l, e] / den[l]
                                   - ksum[d] sum_{e,d',s} g[l, e] phi(q[l, d']) m phi(k[s, d']) v[s, e] / den[l]^2)
        dk[s, d] = m phi'(k[s, d]) (sum_{l,e} phi(q[l, d]) g[l, e] v[s, e] / den[l]
                    - sum_{l,e,d',s'} phi(q[l, d]) g[l, e] phi(q[l, d']) m phi(k[s', d']) v[s', e] / den[l]^2)
        dv[s, e] = m sum_{d,l} phi(k[s, d]) phi(q[l, d]) g[l, e] / den[l]
    (the key sums of positive terms count as one factor). Any implementation's rounding scales with these
    products, not with their sum, which cancels exactly when a sample has one key or D = 1 (dq, dk are then
    O(eps)) and by chance for a few random-sign terms (small T, E). The floor is a quarter of that
    root-sum-square: on generic inputs ||dq|| is 0.3-0.4x it (its two terms largely cancel), ||dk|| about 1x
    and ||dv|| 2.5-4x, so a quarter leaves the plain relative error in charge there and keeps a 1e-4 error
    visible at the 1e-5 tolerance, while a correct fp32 implementation stays within about 6e-7 of the full
    root-sum-square (10,000 random small cases, 2026-11-26), i.e. about 2.4e-6 of the floor. Shapes as the op:
    grad_out (N, T, H, E), q, k (N, T, H, D), v (N, T, H, E), key_mask (N, T) bool or None.
    Returns {"q": ..., "k": ..., "v": ...}."""
    g2, q, k, v2 = grad_out.detach().double() ** 2, q.detach().double(), k.detach().double(), v.detach().double() ** 2
    phi_q, phi_k = torch.sigmoid(q), torch.sigmoid(k)
    m = key_mask[:, :, None, None].double() if key_mask is not None else torch.ones_like(phi_k[..., :1])
    ksum = (m * phi_k).sum(dim=1) + eps  # (N, H, D)
    den2 = torch.einsum("nlhd,nhd->nlh", phi_q, ksum)[..., None] ** 2  # (N, T, H, 1)
    phi_q2, phi_k2 = phi_q ** 2, m * phi_k ** 2
    w = torch.einsum("nshd,nshe->nhde", phi_k2, v2)  # sum_s (m phi(k) v)^2
    gw = torch.einsum("nlhe,nhde->nlhd", g2, w)  # sum_{e,s} (m phi(k[s, d]) v[s, e] g[l, e])^2
    z = (phi_q2 * gw).sum(-1, keepdim=True)  # sum_{e,d',s} (g phi(q[l, d']) m phi(k[s, d']) v[s, e])^2
    dq2 = (phi_q * (1 - phi_q)) ** 2 * (gw / den2 + ksum[:, None] ** 2 * z / den2 ** 2)
    p = torch.einsum("nlhd,nlhe->nhde", phi_q2 / den2, g2)  # sum_l (phi(q[l, d]) g[l, e] / den[l])^2
    dk2 = m * (phi_k * (1 - phi_k)) ** 2 * (torch.einsum("nshe,nhde->nshd", v2, p)
                                             + torch.einsum("nlhd,nlh->nhd", phi_q2 / den2 ** 2, z[..., 0])[:, None])
    dv2 = torch.einsum("nshd,nhde->nshe", phi_k2, p)
    return {name: 0.25 * float(t.sum().sqrt()) for name, t in (("q", dq2), ("k", dk2), ("v", dv2))}


def validate_inputs(q, k, v, key_mask=None, eps: float = 1e-6) -> None:
    """Raise ``ValueError`` naming the argument, what is expected and what was received."""
    named = (("q", q), ("k", k), ("v", v))
    check_leading_tensor("linear_attention", named, "(N, T, H, D)")
    N, T, H, D = q.shape
    if k.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"linear_attention: k: expected shape (N, T, H, D) = {shape_of(q)} like q, "
                         f"got {shape_of(k)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"linear_attention: v: expected shape (N, T, H, E) with (N, T, H) = "
                         f"{(N, T, H)} like q, got {shape_of(v)}")
    check_same_dtype_device("linear_attention", named)
    if key_mask is not None:
        if not isinstance(key_mask, torch.Tensor):
            raise ValueError(f"linear_attention: key_mask: expected a bool tensor (N, T) or None, "
                             f"got {type(key_mask).__name__}")
        if key_mask.shape != (N, T):
            raise ValueError(f"linear_attention: key_mask: expected shape (N, T) = {(N, T)}, "
                             f"got {shape_of(key_mask)}")
        if key_mask.dtype != torch.bool:
            raise ValueError(f"linear_attention: key_mask: expected dtype torch.bool, got {key_mask.dtype}")
        if key_mask.device != q.device:
            raise ValueError(f"linear_attention: key_mask: expected device {q.device} (same as q), "
                             f"got {key_mask.device}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"linear_attention: eps: expected a Python float, got {type(eps).__name__}")


# --------------------------------------------------------------------------------------------
# Native op: fake (meta) kernels and autograd, registered once the extension is loaded

def _fake_forward(q, k, v, key_mask, eps):
    N, T, H, D = q.shape
    E = v.shape[3]
    state = torch.float64 if q.dtype == torch.float64 else torch.float32
    return (q.new_empty((N, T, H, E)), q.new_empty((N, H, D, E), dtype=state),
            q.new_empty((N, H, D), dtype=state))


def _fake_backward(grad_out, q, k, v, key_mask, kv_state, key_sum, eps):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def save_backward_context(ctx, inputs, output):
    """Autograd context of both linear-attention forward ops (native and Triton): same schema, same saves."""
    q, k, v, key_mask, eps = inputs
    _, kv_state, key_sum = output
    ctx.mark_non_differentiable(kv_state, key_sum)
    ctx.save_for_backward(q, k, v, key_mask, kv_state, key_sum)
    ctx.eps = eps


def _backward(ctx, grad_out, _grad_kv_state, _grad_key_sum):
    q, k, v, key_mask, kv_state, key_sum = ctx.saved_tensors
    grad_q, grad_k, grad_v = torch.ops.trgnet.linear_attention_backward(
        grad_out.contiguous(), q, k, v, key_mask, kv_state, key_sum, ctx.eps)
    return grad_q, grad_k, grad_v, None, None


def register_native() -> None:
    """Fake kernels and autograd of the native ops; called by ``trgnet_fast._native`` after loading."""
    register_native_op(OP_NAME, _fake_forward, _fake_backward, _backward, save_backward_context)


def _linear_attention_native(q, k, v, key_mask, eps):
    ops = _native.ops()
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if key_mask is not None:
        key_mask = key_mask.contiguous()
    return ops.linear_attention(q, k, v, key_mask, float(eps))[0]


def _linear_attention_triton(q, k, v, key_mask, eps):
    from trgnet_fast.triton.linear_attention import linear_attention_triton

    return linear_attention_triton(q, k, v, key_mask, eps)


def linear_attention(q, k, v, key_mask=None, eps: float = 1e-6, backend: str | None = None):
    """Non-causal linear attention with sigmoid features (formula in the module docstring).

    Args:
        q: (N, T, H, D) queries, floating dtype.
        k: (N, T, H, D) keys, same dtype and device as q.
        v: (N, T, H, E) values, same dtype and device as q.
        key_mask: (N, T) bool, True = frame takes part in the key/value sums; None = all frames
            (the published behaviour, padding included).
        eps: added to every element of the key sum.
        backend: "auto" | "torch" | "triton" | "cuda" | None (None: ``$TRGNET_BACKEND``, else
            auto), see ``trgnet_fast.backend``. "cuda" needs the native extension; on CUDA
            tensors its kernels take D, E <= 64. "triton" runs on CUDA tensors, or on CPU
            tensors under ``TRITON_INTERPRET=1`` (any D, E; sized for D, E <= 64).

    Returns:
        out: (N, T, H, E), dtype and device of q. Differentiable w.r.t. q, k, v.

    Raises:
        ValueError: bad shapes / dtypes / devices (checked before any backend runs).
        RuntimeError: the requested backend is not usable (see ``trgnet_fast.backend``).

    Non-contiguous inputs are accepted; the native and triton backends copy them to contiguous
    memory.
    """
    validate_inputs(q, k, v, key_mask, eps)
    impl = resolve_backend(OP_NAME, backend, q.device.type)
    if impl == "torch":
        return linear_attention_reference(q, k, v, key_mask, eps)
    if impl == "cuda":
        return _linear_attention_native(q, k, v, key_mask, eps)
    if impl == "triton":
        return _linear_attention_triton(q, k, v, key_mask, eps)
    raise AssertionError(impl)  # every registered backend is dispatched above
