"""Property-based parity of every fused linear-attention backend (hypothesis): shapes (N, T, heads, head
dims), dtypes, mask patterns and contiguity drawn at random, each case against the float64 reference.

Backends: triton (CPU interpreter here) and the native op (C++ CPU kernels here, CUDA kernels on a GPU).
Tolerances (design.md §5): fp64 <= 1e-10, fp32 <= 1e-5 relative.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_cases import TOL, check_forward_backward, make_inputs, make_mask
from trgnet_fast.backend import backend_status, implemented_backends
from trgnet_fast.ops.linear_attention import OP_NAME

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STATUS = backend_status(DEVICE)
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not STATUS[b][0], reason=f"{b} unusable: {STATUS[b][1]}"))
            for b in sorted(implemented_backends(OP_NAME) - {"torch"})]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=8, deadline=None)
@given(N=st.integers(1, 2), T=st.integers(1, 40), H=st.integers(1, 2), D=st.integers(1, 9),
       E=st.integers(1, 9), mask_kind=st.sampled_from(["none", "random", "tail", "one"]),
       contiguous=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_fused_backend_property(backend, N, T, H, D, E, mask_kind, contiguous, dtype):
    q, k, v, _ = make_inputs(N, T, H, D, E, dtype=dtype, device=DEVICE)
    if not contiguous:  # same values, head-major storage
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    mask = make_mask(mask_kind, N, T, DEVICE)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    check_forward_backward(q, k, v, mask, TOL[dtype], backend)
