"""Plain-PyTorch reference of the linear attention (the yardstick of every test, parity row and benchmark),
and the floors of its gradient errors. Shapes in the package docstring (``trgnet_fast/ops/linear_attention``)."""
from __future__ import annotations

import torch


def linear_attention_reference(q, k, v, key_mask=None, eps: float = 1e-6):
    """Plain-PyTorch reference. q, k: (N, T, H, D); v: (N, T, H, E); key_mask: (N, T) or None.

    Returns out: (N, T, H, E), dtype of the inputs (computed in that dtype).
    """
    phi_q = torch.sigmoid(q)
    if key_mask is None:
        phi_k = torch.sigmoid(k)
    else:
        # masked frames take no part even when non-finite (NaN * 0 is NaN): filled, not multiplied, before and
        # after the sigmoid, so that their values and gradients are exact zeros
        masked = ~key_mask[:, :, None, None]
        phi_k = torch.sigmoid(k.masked_fill(masked, 0)).masked_fill(masked, 0)
        v = v.masked_fill(masked, 0)
    kv = torch.einsum("nshd,nshe->nhde", phi_k, v)
    ksum = phi_k.sum(dim=1) + eps  # (N, H, D)
    num = torch.einsum("nlhd,nhde->nlhe", phi_q, kv)
    den = torch.einsum("nlhd,nhd->nlh", phi_q, ksum)
    return num / den[..., None]


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
