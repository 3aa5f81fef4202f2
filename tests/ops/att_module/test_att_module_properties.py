"""Property-based parity of every fused AttModule backend (hypothesis): sizes, dilations, modes, sequence layouts,
masks, dropout, dtypes and the memory layout of x drawn at random, each case against the float64 reference.

Drawn: N 1-3 sequences, H 1-4 heads of D 1-16 (C = H D), T 1-40 frames, dilation from {1, 2, 3, 7, 16, 64, 512}
(d < T, d >= T), encoder or decoder, the layout (published; padded rows with lengths 0..T; packed with cut
points drawn with repetition, so empty sequences occur), a 0/1 frame mask or none, dropout on or off, x
contiguous, transposed (T, C) storage or a strided slice with poisoned gaps, and the seed of the values. Forward
and every gradient (x, values, the 12 weights and biases, alpha) are checked.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against the float64 reference, fp64 <= 1e-10,
fp32 <= 1e-5. The interpreter is slow (~ms per program): few examples for triton on CPU.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from att_module_cases import assert_close_to_reference, case_inputs, size
from hypothesis_cases import examples, seeded, with_layout
from op_checks import BACKEND_DEVICE, TOL, fused_backends
from trgnet_fast.ops.att_module import OP_NAME
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
DRAWS = dict(n=st.integers(1, 3), heads=st.integers(1, 4), d=st.integers(1, 16), t=st.integers(1, 40),
             dilation=st.sampled_from([1, 2, 3, 7, 16, 64, 512]), mode=st.sampled_from(["encoder", "decoder"]),
             layout=st.sampled_from(["published", "rows", "packed"]), masked=st.booleans(), dropout=st.booleans(),
             memory=st.sampled_from(["contiguous", "transposed", "strided"]), seed=st.integers(0, 2 ** 32 - 1),
             dtype=st.sampled_from([torch.float32, torch.float64]))


def _offsets(layout, n, t, device):
    """cu_seqlens of the drawn layout: rows with lengths in [0, t]; packed cut points in [0, t] with repetition."""
    if layout == "rows":
        lengths = torch.randint(0, t + 1, (n,))
    else:
        cuts = torch.randint(0, t + 1, (n - 1,)).sort().values
        lengths = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int64), cuts, torch.full((1,), t)]))
    return torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(device, torch.int32)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_fused_backend_property(backend):
    device = BACKEND_DEVICE[backend]

    @settings(max_examples=examples(backend, 12, 60), deadline=None)
    @given(**DRAWS)
    def case(n, heads, d, t, dilation, mode, layout, masked, dropout, memory, seed, dtype):
        with seeded(seed):
            s = size(n, t, c=heads * d, heads=heads, dilation=dilation, mode=mode, layout="published",
                     masked=masked, dropout=dropout)
            inputs = case_inputs(s, device=device, seed=seed)
            if layout != "published":
                inputs["cu_seqlens"] = _offsets(layout, n, t, device)
                if layout == "packed":  # one row holds every sequence
                    inputs.update({k: inputs[k][:1] for k in ("x", "values", "mask") if inputs[k] is not None})
            inputs["x"] = with_layout(inputs["x"], memory, (1, 2))
            assert_close_to_reference(inputs, backend, TOL[dtype], dtype)
    case()
