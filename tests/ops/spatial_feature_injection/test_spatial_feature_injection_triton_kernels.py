"""The Triton kernels of the fused SFI (``trgnet_fast/ops/spatial_feature_injection/triton_kernels.py``) against the
plain-PyTorch reference ``spatial_feature_injection_reference``, on the raw op
``torch.ops.trgnet_triton.spatial_feature_injection`` (in Triton's CPU interpreter here, on the GPU where there is
one).

What is particular to the Triton kernels (the backend parity through the public function, dropout, determinism,
fp16, opcheck and validation are in the other test files of this folder): float64 parity of out and of every
gradient of the raw op (group, h, the 8 weights and biases; ``torch.autograd.grad`` through the op's registered
autograd), ||a - b|| / max(||b||, floor) <= 1e-10 (floor: the op's ``gradient_error_floors`` for the weights and
biases, 0 for out, grad_group and grad_h), over odd sizes (C = 4, 8, 12, 20, 64; G V from 5 to 200, across the
conv_s block of ``GROUP_BLOCK`` channels; T = 1, 5, 37, 150), group as a channel slice, contiguous and permuted
(any strides), mask and dropout, and programs that run several tiles; every output written with every launcher
buffer poisoned; the launches (forward 1, backward 2, the registry's kernels in order).
"""
from __future__ import annotations

import pytest
import torch

from op_checks import DEVICE
from spatial_feature_injection_cases import CASES as CASES_OF_OP
from spatial_feature_injection_cases import case_inputs, raw_args, size

kernels = pytest.importorskip("trgnet_fast.ops.spatial_feature_injection.triton_kernels")
am_kernels = pytest.importorskip("trgnet_fast.ops.att_module.triton_kernels")


def triton_fn(**kw):
    return kernels.spatial_feature_injection_triton(*raw_args(kw))


# ----------------------------------------------------------------------------------------------
# float64 parity

CASES = {  # spec.size kwargs; BT = 16 frames per tile (FRAME_TILE), conv_s in blocks of up to 64 group channels
    "C4-GV5-T1": size(2, 1, c=4, g=1, v=5),
    "C8-GV21-T5-mask-dropout": size(2, 5, c=8, g=3, v=7, masked=True, dropout=True),
    "C12-GV24-T37-contiguous": size(1, 37, c=12, g=8, v=3, group_slice=False),
    "C20-GV85-T150-mask-dropout": size(1, 150, c=20, g=5, v=17, masked=True, dropout=True),
    "C64-GV200-T37-mask": size(1, 37, c=64, g=8, v=25, masked=True),
    "C8-GV129-T5-contiguous-dropout": size(3, 5, c=8, g=3, v=43, group_slice=False, dropout=True),
}


def test_cases_cover_the_sizes():
    assert {c["C"] for c in CASES.values()} == {4, 8, 12, 20, 64}
    assert {c["T"] for c in CASES.values()} == {1, 5, 37, 150}
    group_channels = {c["G"] * c["V"] for c in CASES.values()}
    assert min(group_channels) == 5 and max(group_channels) == 200
    assert any(gv > kernels.GROUP_BLOCK and gv % kernels.GROUP_BLOCK for gv in group_channels)  # several blocks
    assert {c["group_slice"] for c in CASES.values()} == {True, False}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float64_parity(case):
    CASES_OF_OP.assert_float64_parity(triton_fn, case_inputs(CASES[case], device=DEVICE))


def test_float64_parity_any_group_strides():
    """group as a permuted view (frames fastest-varying last but one, joints outermost): read through its
    strides, grad_group contiguous."""
    inputs = case_inputs(size(2, 21, c=8, g=4, v=9, masked=True, dropout=True), device=DEVICE)
    n, g, t, v = inputs["group"].shape
    inputs["group"] = torch.randn(v, n, t, g, dtype=torch.float64, device=DEVICE).permute(1, 3, 2, 0)
    assert not inputs["group"].is_contiguous()
    CASES_OF_OP.assert_float64_parity(triton_fn, inputs)
    grad_group = kernels.spatial_feature_injection_backward_triton(torch.randn_like(inputs["h"]), *raw_args(inputs))[0]
    assert grad_group.shape == inputs["group"].shape and grad_group.is_contiguous()


@pytest.mark.parametrize("target_slots", [1, 3], ids=["one-chunk", "three-chunks"])
def test_float64_parity_chunks_of_several_tiles(monkeypatch, target_slots):
    # TARGET_SLOTS (the AttModule's geometry, shared) = 1 / 3: each program runs several tiles (the last chunk
    # partial), the weight-gradient partials accumulate over tiles in the slot and are reduced over chunks
    monkeypatch.setattr(am_kernels, "TARGET_SLOTS", target_slots)
    CASES_OF_OP.assert_float64_parity(triton_fn, case_inputs(size(2, 150, c=12, g=4, v=19, masked=True, dropout=True),
                                                             device=DEVICE))


# ----------------------------------------------------------------------------------------------
# outputs fully written

@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_outputs_fully_written(monkeypatch, dropout):
    """Every buffer the launchers allocate poisoned (NaN, the linear attention's POISON_OUTPUTS switch that
    ``_empty`` reads; the workspace included): out and every gradient equal the reference and an unpoisoned run,
    so every element is written (T = 37: a partial last tile; masked frames: out 0)."""
    inputs = case_inputs(size(2, 37, c=12, g=4, v=17, masked=True, dropout=dropout), device=DEVICE)
    out, _ = CASES_OF_OP.poisoned_run(monkeypatch, triton_fn, inputs)
    assert not out[(inputs["mask"] == 0).expand_as(out)].any()


# ----------------------------------------------------------------------------------------------
# launches

def test_launches_are_the_registry_kernels(monkeypatch):
    """Forward 1 launch, backward 2, in ``OpSpec.triton_kernels``' order, through the raw ops and autograd."""
    CASES_OF_OP.assert_launches_are_the_registry_kernels(
        monkeypatch, kernels, kernels.spatial_feature_injection_triton,
        kernels.spatial_feature_injection_backward_triton, size(2, 20, c=8, g=2, v=5, masked=True, dropout=True),
        forward_launches=1)
