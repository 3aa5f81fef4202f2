"""The plain-PyTorch reference of trgnet_fast.ops.linear_attention (``reference.py``, the yardstick of every
other test) against a direct O(T^2) evaluation of the same formula, in float64."""
from __future__ import annotations

import pytest
import torch

from attention_cases import EPS, make_inputs
from op_checks import rel_err
from trgnet_fast.ops.linear_attention.reference import linear_attention_reference


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
