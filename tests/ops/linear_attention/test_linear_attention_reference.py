"""The plain-PyTorch reference of trgnet_fast.ops.linear_attention (``reference.py``, the yardstick of every
other test) against a direct O(T^2) evaluation of the same formula, in float64."""
from __future__ import annotations

import math

import pytest
import torch

from attention_cases import EPS, make_inputs
from op_checks import rel_err
from trgnet_fast.ops.linear_attention.reference import gradient_error_floors, linear_attention_reference


def quadratic_attention(q, k, v, key_mask=None, eps=EPS):
    """Direct O(T^2) evaluation: w_ls = phi(q_l).phi(k_s) m_s,
    out_l = sum_s w_ls v_s / (sum_s w_ls + eps * sum_d phi(q_l)[d])."""
    pq, pk = torch.sigmoid(q), torch.sigmoid(k)
    w = torch.einsum("nlhd,nshd->nhls", pq, pk)  # (N, H, T, T)
    if key_mask is not None:
        w = w * key_mask[:, None, None, :].to(w.dtype)
    num = torch.einsum("nhls,nshe->nlhe", w, v)
    den = w.sum(-1).permute(0, 2, 1) + eps * pq.sum(-1)  # (N, T, H)
    return num / den[..., None]


SHAPES = [  # (N, T, H, D, E): odd T, odd and typical head dims
    (2, 1, 1, 16, 16),
    (2, 7, 4, 5, 3),
    (1, 63, 4, 16, 16),
    (2, 300, 1, 64, 5),
    (3, 300, 4, 16, 64),
]


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_reference_matches_quadratic_evaluation(shape, masked):
    q, k, v, mask = make_inputs(*shape, masked=masked)
    out = linear_attention_reference(q, k, v, mask, EPS)
    assert out.shape == (*shape[:3], shape[4]) and out.dtype == torch.float64
    assert rel_err(out, quadratic_attention(q, k, v, mask, EPS)) <= 1e-12


# ----------------------------------------------------------------------------------------------
# the gradient error floors (``gradient_error_floors``), by brute force over the elementary products


def brute_force_products_rss(grad_out, q, k, v, key_mask=None, eps=EPS) -> dict[str, float]:
    """The root-sum-square of the elementary products each of dq, dk, dv sums, every product built one by one
    with Python loops as ``gradient_error_floors``' docstring writes it (ksum, the key sum of positive terms, is
    one factor; m the key mask). Returns {"q": ..., "k": ..., "v": ...} before the quarter."""
    N, T, H, D = q.shape
    E = v.shape[3]
    pq, pk = torch.sigmoid(q.double()).tolist(), torch.sigmoid(k.double()).tolist()
    g, vv = grad_out.double().tolist(), v.double().tolist()
    m = [[1.0] * T] * N if key_mask is None else key_mask.double().tolist()
    squares = {"q": 0.0, "k": 0.0, "v": 0.0}
    for n in range(N):
        for h in range(H):
            ksum = [sum(m[n][s] * pk[n][s][h][d] for s in range(T)) + eps for d in range(D)]
            den = [sum(pq[n][l][h][d] * ksum[d] for d in range(D)) for l in range(T)]
            for l in range(T):  # dq[l, d]
                for d in range(D):
                    dphi = pq[n][l][h][d] * (1 - pq[n][l][h][d])
                    for s in range(T):
                        for e in range(E):
                            squares["q"] += (dphi * m[n][s] * pk[n][s][h][d] * vv[n][s][h][e] * g[n][l][h][e]
                                             / den[l]) ** 2
                    for e in range(E):
                        for d2 in range(D):
                            for s in range(T):
                                squares["q"] += (dphi * ksum[d] * g[n][l][h][e] * pq[n][l][h][d2] * m[n][s]
                                                 * pk[n][s][h][d2] * vv[n][s][h][e] / den[l] ** 2) ** 2
            for s in range(T):  # dk[s, d]
                for d in range(D):
                    dphi = m[n][s] * pk[n][s][h][d] * (1 - pk[n][s][h][d])
                    for l in range(T):
                        for e in range(E):
                            squares["k"] += (dphi * pq[n][l][h][d] * g[n][l][h][e] * vv[n][s][h][e] / den[l]) ** 2
                            for d2 in range(D):
                                for s2 in range(T):
                                    squares["k"] += (dphi * pq[n][l][h][d] * g[n][l][h][e] * pq[n][l][h][d2]
                                                     * m[n][s2] * pk[n][s2][h][d2] * vv[n][s2][h][e]
                                                     / den[l] ** 2) ** 2
            for s in range(T):  # dv[s, e]
                for e in range(E):
                    for d in range(D):
                        for l in range(T):
                            squares["v"] += (m[n][s] * pk[n][s][h][d] * pq[n][l][h][d] * g[n][l][h][e]
                                             / den[l]) ** 2
    return {name: math.sqrt(square) for name, square in squares.items()}


@pytest.mark.parametrize("eps", [EPS, 0.5], ids=["eps", "large_eps"])
@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
@pytest.mark.parametrize("shape", [(2, 4, 2, 3, 2), (1, 3, 1, 2, 3)], ids=lambda s: "x".join(map(str, s)))
def test_gradient_error_floors_are_a_quarter_of_the_products_root_sum_square(shape, masked, eps):
    """Each floor is 0.25 sqrt(sum of the squared elementary products of its gradient), with and without a key
    mask (fresh random values; the masked keys' q, k, v values are finite and must not count)."""
    q, k, v, mask = make_inputs(*shape, masked=masked)
    if masked:
        mask[0, 0] = False  # at least one masked key with its own values
        mask[0, -1] = True
    grad_out = torch.randn(*shape[:3], shape[4], dtype=torch.float64)
    floors = gradient_error_floors(grad_out, q, k, v, mask, eps)
    expected = brute_force_products_rss(grad_out, q, k, v, mask, eps)
    assert floors.keys() == expected.keys()
    for name, rss in expected.items():
        assert floors[name] == pytest.approx(0.25 * rss, rel=1e-12, abs=0), name
