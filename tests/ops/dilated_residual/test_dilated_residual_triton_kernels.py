"""The Triton kernels of the fused dilated residual layer (``trgnet_fast/ops/dilated_residual/triton_kernels.py``)
against the plain-PyTorch reference ``dilated_residual_reference``, on the raw op
``torch.ops.trgnet_triton.dilated_residual`` (in Triton's CPU interpreter here, on the GPU where there is one).

What is particular to the Triton kernels (the parity of every backend through the public function, float32,
fp16, dropout, determinism and opcheck are in test_dilated_residual_backends.py): float64 parity of out and of
every gradient of the raw op (x, both convs' weights and biases; ``torch.autograd.grad`` through the op's registered
autograd), ||a - b|| / max(||b||, floor) <= 1e-10 (floor: the op's ``gradient_error_floors`` for the weights and
biases, 0 for out and grad_x), over odd channel counts (C = 4, 8, 12, 20), T = 1, 2, 5, 63, 150, every dilation
class relative to the frame tile (d < BT, d >= BT, d >= T, 512), the three sequence layouts, mask and dropout, and
programs that run several tiles; empty sequences and frames outside every sequence with every launcher buffer
poisoned (outputs fully written); the launches (forward 1, backward 3, the registry's kernels in order).
"""
from __future__ import annotations

import pytest
import torch

from dilated_residual_cases import CASES as CASES_OF_OP
from dilated_residual_cases import case_inputs, raw_args, size
from op_checks import DEVICE, rel_err

kernels = pytest.importorskip("trgnet_fast.ops.dilated_residual.triton_kernels")
am_kernels = pytest.importorskip("trgnet_fast.ops.att_module.triton_kernels")


def triton_fn(**kw):
    return kernels.dilated_residual_triton(*raw_args(kw))


# ----------------------------------------------------------------------------------------------
# float64 parity

CASES = {  # spec.size kwargs; BT = 16 frames per tile (FRAME_TILE)
    "C4-T1-d1": size(2, 1, c=4, dilation=1),
    "C8-T2-d3>=T-mask": size(2, 2, c=8, dilation=3, masked=True),
    "C12-T5-d2-dropout": size(2, 5, c=12, dilation=2, dropout=True),
    "C20-T63-d5-rows-mask-dropout": size(3, 63, c=20, dilation=5, layout="rows", masked=True, dropout=True),
    "C4-T150-d17>=BT-mask": size(1, 150, c=4, dilation=17, masked=True),
    "C8-T150-d40-packed-dropout": size(3, 150, c=8, dilation=40, layout="packed", dropout=True),
    "C12-T63-d512-rows-mask": size(2, 63, c=12, dilation=512, layout="rows", masked=True),
    "C8-T63-d70>=T-packed-mask-dropout": size(2, 63, c=8, dilation=70, layout="packed", masked=True, dropout=True),
}


def test_cases_cover_every_dilation_class_and_layout():
    bt = kernels.FRAME_TILE
    classes = {(c["dilation"] < bt, c["dilation"] >= c["T"]) for c in CASES.values()}
    assert {(True, False), (False, False), (False, True), (True, True)} <= classes  # d < BT; BT <= d < T; d >= T
    assert {c["layout"] for c in CASES.values()} == {"published", "rows", "packed"}
    assert {c["C"] for c in CASES.values()} == {4, 8, 12, 20}
    assert {c["T"] for c in CASES.values()} == {1, 2, 5, 63, 150}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float64_parity(case):
    CASES_OF_OP.assert_float64_parity(triton_fn, case_inputs(CASES[case], device=DEVICE))


@pytest.mark.parametrize("target_slots", [1, 3], ids=["one-chunk", "three-chunks"])
def test_float64_parity_chunks_of_several_tiles(monkeypatch, target_slots):
    # TARGET_SLOTS (the AttModule's geometry, shared) = 1 / 3: each program runs several tiles (the last chunk
    # partial), the weight-gradient partials accumulate over tiles and are reduced over chunks
    monkeypatch.setattr(am_kernels, "TARGET_SLOTS", target_slots)
    inputs = case_inputs(size(3, 150, c=8, dilation=7, layout="packed", masked=True, dropout=True), device=DEVICE)
    CASES_OF_OP.assert_float64_parity(triton_fn, inputs)


# ----------------------------------------------------------------------------------------------
# sequences

@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_empty_sequences_and_uncovered_frames(monkeypatch, dropout):
    """Padded rows of lengths 5, 0, 4 of T = 12 with every buffer the launchers allocate poisoned (NaN, the linear
    attention's POISON_OUTPUTS switch that ``_empty`` reads): out and grad_x are 0 on the empty row and past each
    length, everything is written, and equal to the reference and to an unpoisoned run."""
    inputs = case_inputs(size(3, 12, c=8, dilation=2, layout="rows", masked=True, dropout=dropout), device=DEVICE)
    inputs["cu_seqlens"] = torch.tensor([0, 5, 5, 9], dtype=torch.int32, device=DEVICE)
    out, grads = CASES_OF_OP.poisoned_run(monkeypatch, triton_fn, inputs)
    covered = torch.zeros_like(out, dtype=torch.bool)
    covered[0, :, :5] = covered[2, :, :4] = True
    assert not out[~covered].any() and not grads["x"][~covered].any()


def test_packed_with_an_empty_sequence_equals_each_sequence_alone():
    lengths = [11, 0, 26, 4]
    s = size(1, sum(lengths), c=12, dilation=3, layout="packed", masked=True, dropout=False)
    inputs = case_inputs(s, device=DEVICE)
    inputs["cu_seqlens"] = torch.tensor([0, *lengths], device=DEVICE).cumsum(0).to(torch.int32)
    out = triton_fn(**inputs)
    start = 0
    for length in lengths:
        if length:
            frames = slice(start, start + length)
            alone = dict(inputs, cu_seqlens=None, x=inputs["x"][:, :, frames].contiguous(),
                         mask=inputs["mask"][:, :, frames].contiguous())
            assert rel_err(out[:, :, frames], triton_fn(**alone)) <= 1e-12
        start += length


# ----------------------------------------------------------------------------------------------
# launches

def test_launches_are_the_registry_kernels(monkeypatch):
    """Forward 1 launch, backward 3, in ``OpSpec.triton_kernels``' order, through the raw ops and autograd."""
    CASES_OF_OP.assert_launches_are_the_registry_kernels(
        monkeypatch, kernels, kernels.dilated_residual_triton, kernels.dilated_residual_backward_triton,
        size(2, 20, c=8, dilation=2, layout="rows", masked=True, dropout=True), forward_launches=1)
