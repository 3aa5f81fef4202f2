"""Parity of the fused backends of trgnet_fast.ops.aris_losses (the loss's ARIS absolute and relative terms as one
op), each test parametrised over the op's ``OpSpec.backends`` (``trgnet_fast/ops/aris_losses/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.aris_losses``, its C++ kernels on CPU tensors (its CUDA kernels run in
  the ``gpu`` tests and in the CPU emulation, tests/kernels);
* ``triton``: ``torch.ops.trgnet_triton.aris_losses``, on the GPU or in Triton's CPU interpreter (small shapes).

The two terms and the gradients of the features, logit_scale and (with the feature head) the head's weight and bias
against the float64 reference: odd sizes, padding slots, ignored runs, an all-ignored row, one slot, one frame, one
channel, heads narrower and wider than the features; ties of the largest distance; zero-norm segment features;
padding slots' fields out of range; no valid slot; determinism; fp16 / bf16 features; opcheck; gradcheck; compile;
a property test. Tolerances (docs/architecture.md#parity): fp64 <= 1e-10, fp32 <= 1e-5 (or
twice a plain float32 run's error). Fresh random inputs every run.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aris_losses_cases import (assert_close_to_reference, backward_args, case_inputs, check_result, fused,
                               raw_args, reference_run, run, size)
from hypothesis_cases import examples, seeded
from op_checks import BACKEND_DEVICE, INTERPRETED, TOL, backends_and_devices, fused_backends, rel_err
from trgnet_fast.ops.aris_losses.autograd import OP_NAME
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]

CASES = {  # (N, D, T, K, run length, padding slots, head channels C)
    "padded": size(4, 7, 31, 5),
    "short-runs": size(5, 33, 23, 6, run=2, spare=0),
    "one-channel": size(3, 1, 40, 4, run=6),
    "one-frame": size(1, 3, 1, 2, spare=2),
    "long-runs": size(2, 70, 50, 3, run=17, spare=1),
    "K1": size(3, 5, 20, 1, run=3),
    "head": size(4, 37, 29, 5, head=3),
    "head-wider-than-D": size(3, 5, 20, 4, run=3, head=11),
    "head-C1-D1": size(2, 1, 9, 2, spare=1, head=1),
}
HEADS = {"no-head": None, "head": 5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_terms_and_both_gradients(backend, case, dtype):
    inputs = case_inputs(CASES[case], device=BACKEND_DEVICE[backend])
    assert_close_to_reference(inputs, backend, TOL[dtype], dtype)


def _fixed_tolerance_check(inputs, backend, dtype=torch.float64):
    """The terms and gradients of a ``dtype`` run within the fixed TOL[dtype] of the float64 reference."""
    tol = TOL[dtype]
    grad_terms = torch.randn(2, dtype=torch.float64)
    ref_out, ref_grads = reference_run(inputs, grad_terms)
    out, grads = run(fused(backend), inputs, grad_terms, dtype)
    errors = check_result(out, grads, ref_out, ref_grads, dtype, SPEC.grad_error_floor(inputs, grad_terms))
    assert max(errors.values()) <= tol, errors
    return ref_out, ref_grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_ties_of_the_largest_distance(backend, dtype):
    """Two segments of equal constant features far from the rest: four entries share the largest distance (its
    gradient is split between them, as torch's max does) and the two are at distance 0 (gradient 0 there). The
    float32 rounding check would break the ties, so the bound is the fixed float64 one."""
    inputs = case_inputs(size(3, 16, 40, 3, run=4, ties=True), device=BACKEND_DEVICE[backend])
    _fixed_tolerance_check(inputs, backend, dtype)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_zero_norm_segment_features(backend):
    """A segment whose mean is exactly 0 (f̂ = f / 1e-12) and one of norm below the floor."""
    inputs = case_inputs(CASES["padded"], device=BACKEND_DEVICE[backend])
    video, start, count = (int(inputs[n][i]) for n, i in (("segment_video", 0), ("segment_start", 0),
                                                          ("segment_count", 0)))
    inputs["features"][video, :, start:start + count] = 0.0
    video, start, count = (int(inputs[n][2]) for n in ("segment_video", "segment_start", "segment_count"))
    inputs["features"][video, :, start:start + count] = 1e-14
    _fixed_tolerance_check(inputs, backend)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_padding_slots_fields_are_not_read(backend):
    """The label, video and start of padding slots (segment_valid False) point far outside their ranges: nothing is
    read there (the package docstring), the reference's values."""
    inputs = case_inputs(CASES["padded"], device=BACKEND_DEVICE[backend])
    padding = ~inputs["segment_valid"]
    assert padding.any()
    inputs["segment_label"][padding] = 10 ** 6
    inputs["segment_video"][padding] = -7
    inputs["segment_start"][padding] = 10 ** 9
    _fixed_tolerance_check(inputs, backend)


@pytest.mark.parametrize("case", ["padded", "head"])
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_no_valid_slot_gives_zero(backend, case):
    """Every frame ignored (every slot padding): both terms 0, every gradient 0."""
    inputs = case_inputs(CASES[case], device=BACKEND_DEVICE[backend])
    inputs["segment_valid"][:] = False
    inputs["frame_segment"][:] = inputs["segment_count"].shape[0]
    for name in ("absolute_weight", "absolute_log_weight", "relative_weight", "relative_log_weight"):
        inputs[name][:] = 0
    grad_terms = torch.randn(2, dtype=torch.float64)
    out, grads = run(fused(backend), inputs, grad_terms)
    assert torch.equal(out, torch.zeros(2, dtype=torch.float64))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads.values())


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_bitwise_deterministic(ops, backend, head):
    inputs = case_inputs(size(5, 33, 23, 6, run=2, spare=0, head=HEADS[head]), dtype=torch.float32,
                         device=BACKEND_DEVICE[backend])
    args = raw_args(inputs)
    first, second = ops.aris_losses(*args), ops.aris_losses(*args)
    assert len(first) == 5 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert first[4].shape == ((0,) if HEADS[head] is None else (first[1].shape[0], HEADS[head]))
    grad_terms = torch.randn(2)
    back = [ops.aris_losses_backward(grad_terms, *backward_args(args, first), torch.float32) for _ in range(2)]
    assert len(back[0]) == 4
    assert all(torch.equal(a, b) and torch.isfinite(a).all() for a, b in zip(*back))


@pytest.mark.parametrize("case", ["long-runs", "head"])
@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, dtypes=(torch.float16, torch.bfloat16)))
def test_16bit_features(backend, dtype, case):
    """16-bit features (the rest in float32): float32 terms within 2x the error of the reference run on the same
    16-bit values in float32 (+1e-6), gradients within 2x the reference's 16-bit gradient error (+1e-3)."""
    inputs = case_inputs(CASES[case], device=BACKEND_DEVICE[backend])
    inputs["features"] = inputs["features"].to(dtype).double()  # the float64 reference sees the 16-bit values
    grad_terms = torch.randn(2, dtype=torch.float64)
    ref_out, ref_grads = reference_run(inputs, grad_terms)
    low_out, low_grads = reference_run(inputs, grad_terms, dtype)
    out, grads = run(fused(backend), inputs, grad_terms, dtype)
    assert out.dtype == torch.float32 and grads["features"].dtype == dtype
    assert rel_err(out, ref_out) <= 2 * rel_err(low_out, ref_out) + 1e-6
    for name, g in grads.items():
        assert rel_err(g, ref_grads[name]) <= 2 * rel_err(low_grads[name], ref_grads[name]) + 1e-3, name


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device, head):
    """Schema, fake-tensor and autograd registration checks of the forward and backward ops (under Triton's CPU
    interpreter the schema only: docs/architecture.md#triton-interpreter)."""
    kwargs = {"test_utils": ("test_schema",)} if backend == "triton" and device == "cpu" else {}
    inputs = case_inputs(size(4, 7, 31, 5, head=HEADS[head]), device=device)
    args = raw_args(inputs)
    for i, arg in enumerate(args):  # features, logit_scale, the head
        if arg is not None and i in (0, 8, 13, 14):
            args[i] = arg.requires_grad_(True)
    torch.library.opcheck(ops.aris_losses.default, tuple(args), **kwargs)
    detached = [None if a is None else a.detach() for a in args]
    outputs = ops.aris_losses(*detached)
    torch.library.opcheck(ops.aris_losses_backward.default,
                          (torch.randn_like(outputs[0]), *backward_args(detached, outputs), torch.float64), **kwargs)


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend, head):
    """Finite differences of the fused op w.r.t. the features, logit_scale and the head."""
    inputs = case_inputs(size(2, 3, 9, 3, run=2, head=HEADS[head] and 4), device=BACKEND_DEVICE[backend])
    names = SPEC.grad_names(inputs)
    leaves = [inputs[n].clone().requires_grad_(True) for n in names]

    def f(*tensors):
        return fused(backend)(**inputs | dict(zip(names, tensors)))

    assert torch.autograd.gradcheck(f, leaves, fast_mode=INTERPRETED and backend == "triton")


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) of the op traces it (fake kernel and autograd registration, no graph break) and
    matches eager, every gradient (the feature head's too) included."""
    torch._dynamo.reset()
    inputs = case_inputs(size(5, 33, 23, 6, run=2, spare=0, head=4), device=device)
    names = SPEC.grad_names(inputs)
    leaves = [inputs[n].clone().requires_grad_(True) for n in names]

    def total(*tensors):
        return (fused(backend)(**inputs | dict(zip(names, tensors)))
                * torch.tensor([0.8, 1.0], dtype=tensors[0].dtype, device=tensors[0].device)).sum()

    eager = total(*leaves)
    eager_grads = torch.autograd.grad(eager, leaves)
    compiled = torch.compile(total, fullgraph=True)(*leaves)
    grads = torch.autograd.grad(compiled, leaves)
    assert rel_err(compiled, eager) <= 1e-12
    assert all(rel_err(g, e) <= 1e-12 for g, e in zip(grads, eager_grads))


DRAWS = dict(n=st.integers(1, 4), d=st.integers(1, 40), t=st.integers(1, 40), k=st.integers(1, 8),
             run=st.integers(1, 12), spare=st.integers(0, 4), head=st.none() | st.integers(1, 24),
             seed=st.integers(0, 2 ** 32 - 1), dtype=st.sampled_from([torch.float32, torch.float64]))


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_fused_backend_property(backend):
    """Random sizes, run lengths, padding slots and dtypes, each against the float64 reference."""
    device = BACKEND_DEVICE[backend]

    @settings(max_examples=examples(backend, 10, 60), deadline=None)
    @given(**DRAWS)
    def case(n, d, t, k, run, spare, head, seed, dtype):
        with seeded(seed):
            inputs = case_inputs(size(n, d, t, k, run=run, spare=spare, head=head), device=device, seed=seed)
            assert_close_to_reference(inputs, backend, TOL[dtype], dtype)

    case()


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(SPEC.parity_sizes["cuda"])), ids=lambda i: f"size{i}")
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_paper_sizes(backend, index):
    """The GPU kernels at TRGNet's size (N = 8, T = 6000, D = 768, K = 52, ~40 segments per video), with ties, long
    runs and one-frame runs, and with the 64 -> 768 feature head: float32 terms and every gradient against the
    float64 reference."""
    inputs = case_inputs(SPEC.parity_sizes["cuda"][index], device="cuda")
    if SPEC.parity_sizes["cuda"][index]["ties"]:  # the rounding check's nudged inputs would break the ties
        _fixed_tolerance_check(inputs, backend, torch.float32)
    else:
        assert_close_to_reference(inputs, backend, TOL[torch.float32], torch.float32)
