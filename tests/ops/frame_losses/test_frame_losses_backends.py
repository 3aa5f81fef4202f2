"""Parity of the fused backends of trgnet_fast.ops.frame_losses (the loss's CE, GS-TMSE and boundary BCE of every
stage as one op), each test parametrised over the op's ``OpSpec.backends`` (``trgnet_fast/ops/frame_losses/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.frame_losses``, its C++ kernels on CPU tensors (its CUDA kernels run in
  the ``gpu`` tests and in the CPU emulation, tests/kernels);
* ``triton``: ``torch.ops.trgnet_triton.frame_losses``, on the GPU or in Triton's CPU interpreter (small shapes).

The three terms and the gradients of logits and boundary logits against the float64 reference: both GS-TMSE axes,
odd sizes, ignored runs (inside a row, at its end, a row without pairs), class weights, K = 1, a tile of frames
split by T, more boundary than logit stages and the reverse; clamped pair differences; determinism; fp16 / bf16;
indices out of range; opcheck; gradcheck; compile; a property test. Tolerances (docs/architecture.md#parity):
fp64 <= 1e-10, fp32 <= 1e-5 (or twice a plain float32 run's error). Fresh random inputs every run.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import strategies as st

from frame_losses_cases import CASES as CASES_OF_OP
from frame_losses_cases import assert_close_to_reference, case_inputs, fused, raw_args, reference_run, run, size
from hypothesis_cases import check_drawn_cases, examples
from op_checks import (BACKEND_DEVICE, TOL, assert_raw_ops_deterministic, backends_and_devices, fused_backend_cases,
                       fused_backends, opcheck_raw_ops, rel_err)
from trgnet_fast.ops.frame_losses import OP_NAME
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]

CASES = {  # (S, R, N, K, T)
    "time": size(2, 3, 4, 7, 23),
    "classes": size(2, 3, 4, 7, 23, time_axis=False),
    "pku-classes-weighted": size(3, 2, 3, 52, 70, class_weight=True),
    "classes-weighted": size(1, 4, 3, 11, 37, time_axis=False, class_weight=True),
    "K1": size(2, 1, 2, 1, 9),
    "T1": size(2, 2, 3, 5, 1),
    "no-ignored": size(1, 1, 2, 6, 41, ignored=False),
    "K130-tiles": size(1, 2, 2, 130, 19),
}


@pytest.mark.parametrize("backend, case, dtype", fused_backend_cases(SPEC, CASES))
def test_terms_and_both_gradients(backend, case, dtype):
    CASES_OF_OP.assert_case_close_to_reference(CASES[case], backend, dtype)


@pytest.mark.parametrize("time_axis", [True, False], ids=["time", "classes"])
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_clamped_pairs(backend, time_axis):
    """Large logits: most pair differences exceed the threshold (their gradient is 0), some do not."""
    inputs = case_inputs(size(2, 1, 3, 9, 30, time_axis=time_axis), device=BACKEND_DEVICE[backend])
    inputs["logits"] = inputs["logits"] * 4
    inputs["threshold"] = 2.5
    ref, _ = reference_run(inputs)
    loose, _ = reference_run(inputs | {"threshold": 1e3})
    assert ref[1] < 0.9 * loose[1]  # the clamp acts
    assert_close_to_reference(inputs, backend, TOL[torch.float64])


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_no_labelled_frame_gives_nan_ce_as_nll_loss(backend):
    """Every label ignored: the CE weights are 0 / 0 = NaN (the target builder's, F.nll_loss's mean): CE is NaN, the
    other terms are finite, as in the reference."""
    inputs = case_inputs(CASES["time"], device=BACKEND_DEVICE[backend])
    inputs["ce_weight"] = torch.full_like(inputs["ce_weight"], float("nan"))
    inputs["labels"] = torch.full_like(inputs["labels"], 255)
    out, _ = run(fused(backend), inputs)
    ref, _ = reference_run(inputs)
    assert torch.isnan(out[0]) and torch.isnan(ref[0])
    assert rel_err(out[1:], ref[1:]) <= TOL[torch.float64]


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_indices_out_of_range_are_read_safely(backend):
    """Labels and pair indices outside their ranges (negative, >= K, >= T) take no part, as the package docstring
    says: no out-of-range read, the reference's values."""
    inputs = case_inputs(CASES["time"], device=BACKEND_DEVICE[backend])
    t = inputs["labels"].shape[1]
    inputs["labels"][0, :4] = torch.tensor([-3, 7, 1000, -1])
    # frame 5 of row 0 loses its pair both ways (its partner indices point outside the row)
    partner = int(inputs["next_frame"][0, 5])
    inputs["next_frame"][0, 5] = t + 7
    inputs["previous_frame"][0, partner] = -2
    assert_close_to_reference(inputs, backend, TOL[torch.float64])


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_bitwise_deterministic(ops, backend):
    args = raw_args(case_inputs(CASES["pku-classes-weighted"], dtype=torch.float32, device=BACKEND_DEVICE[backend]))
    # the backward takes time_lse between the tensors and the scalars
    grads = assert_raw_ops_deterministic(ops.frame_losses, ops.frame_losses_backward, args,
                                         lambda outputs: (torch.randn(3), *args[:10], outputs[1], *args[10:]))
    assert len(grads) == 2


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, dtypes=(torch.float16, torch.bfloat16)))
def test_16bit_logits(backend, dtype):
    """16-bit logits and boundary logits (the weights in float32): float32 terms within 2x the error of the
    reference run on the same 16-bit values in float32 (+1e-6), gradients in the logits' dtype within 2x the
    reference's 16-bit gradient error (+1e-3)."""
    inputs = case_inputs(CASES["pku-classes-weighted"], device=BACKEND_DEVICE[backend])
    for name in ("logits", "boundary_logits"):
        inputs[name] = inputs[name].to(dtype).double()  # the float64 reference sees exactly the 16-bit values
    CASES_OF_OP.assert_16bit_close_to_reference(inputs, torch.randn(3, dtype=torch.float64), backend, dtype,
                                                out_dtype=torch.float32, out_slack=1e-6)


@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device):
    """Schema, fake-tensor and autograd registration checks of the forward (the logits and boundary logits
    requiring grad) and backward ops."""
    def backward_calls(args):
        terms, time_lse = ops.frame_losses(*args)
        return [(torch.randn_like(terms), *args[:10], time_lse, *args[10:])]

    opcheck_raw_ops(ops.frame_losses, ops.frame_losses_backward,
                    raw_args(case_inputs(CASES["classes-weighted"], device=device)), (0, 6), backward_calls,
                    backend, device)


@pytest.mark.parametrize("time_axis", [True, False], ids=["time", "classes"])
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend, time_axis):
    """Finite differences of the fused op w.r.t. the logits and the boundary logits."""
    CASES_OF_OP.assert_gradcheck(size(2, 2, 2, 3, 6, time_axis=time_axis), backend, ("logits", "boundary_logits"))


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) of the op traces it (fake kernel and autograd registration, no graph break) and
    matches eager, both gradients included."""
    CASES_OF_OP.assert_compiled_sum_matches_eager(CASES["classes-weighted"], backend, device,
                                                  ("logits", "boundary_logits"), 1e-12)


DRAWS = dict(s=st.integers(1, 3), r=st.integers(1, 3), n=st.integers(1, 4), k=st.integers(1, 40),
             t=st.integers(1, 50), time_axis=st.booleans(), ignored=st.booleans(), class_weight=st.booleans(),
             seed=st.integers(0, 2 ** 32 - 1), dtype=st.sampled_from([torch.float32, torch.float64]))


def _drawn_case(backend, s, r, n, k, t, time_axis, ignored, class_weight, seed, dtype):
    CASES_OF_OP.assert_seeded_case_close_to_reference(
        size(s, r, n, k, t, time_axis=time_axis, ignored=ignored, class_weight=class_weight), backend, seed, dtype)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_fused_backend_property(backend):
    """Random stage counts, sizes, ignored runs, class weights, axes and dtypes, each against the float64
    reference."""
    check_drawn_cases(partial(_drawn_case, backend), examples(backend, 12, 60), **DRAWS)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(SPEC.parity_sizes["cuda"])), ids=lambda i: f"size{i}")
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_paper_sizes(backend, index):
    """The GPU kernels at TRGNet's size (2 logit and 3 boundary stages, N = 8, T = 6000, K = 52, both axes),
    K = 1000 and odd shapes: float32 terms and both gradients against the float64 reference."""
    CASES_OF_OP.assert_gpu_paper_size_close_to_reference(backend, index)
