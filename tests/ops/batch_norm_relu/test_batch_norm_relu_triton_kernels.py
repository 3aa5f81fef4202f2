"""The Triton kernels of the fused BatchNorm + residual + ReLU (``trgnet_fast/ops/batch_norm_relu/triton_kernels.py``)
against the plain-PyTorch reference (``batch_norm_relu_reference`` and its closed-form backward
``batch_norm_relu_backward_reference``), on the raw ops ``torch.ops.trgnet_triton.batch_norm_relu`` /
``batch_norm_relu_backward`` (in Triton's CPU interpreter here, on the GPU where there is one).

Every case draws fresh random inputs and cotangents. What is particular to the Triton kernels (the parity of every backend through the public function, opcheck and
the generic checks are in the other test files of this folder): float64 parity of out, mean, var and the four
gradients, ||a - b|| / ||b|| <= 1e-10, over odd sizes (rows of one block and of several, the (C, S) work split with
S > 1 and an uneven deal of blocks to the chunks, chunks that cross rows), with and without residual and frame_mask
(padded frames with a fully padded row, and an all-zero mask); the gradients through the op's registered autograd;
float32 within 1e-5 (grad_weight and grad_bias relative to max(||ref||, the op's gradient_error_floors)) and float16
within 2x the error of the reference run in float16 / float32 state; in float32, the shifted one-pass variance of a
channel with a large mean and the mean of zero-mean channels; every output written with every launcher buffer
poisoned; bitwise determinism; grad_residual without residual_grad; x with no element; the raw ops' argument
errors; the launches (forward 2, backward 2, the registry's kernels in order).
"""
from __future__ import annotations

import pytest
import torch

from op_checks import DEVICE, TOL, assert_raw_triton_op_rejects, non_contiguous, rel_err
from trgnet_fast.ops.batch_norm_relu.reference import (batch_norm_relu_backward_reference,
                                                       batch_norm_relu_reference, gradient_error_floors)
from trgnet_fast.ops.batch_norm_relu.spec import SPEC
from trgnet_fast.ops.batch_norm_relu.validation import state_dtype

kernels = pytest.importorskip("trgnet_fast.ops.batch_norm_relu.triton_kernels")
la_kernels = pytest.importorskip("trgnet_fast.ops.linear_attention.triton_kernels")

EPS = 1e-5
STATE_OUTPUTS = ("mean", "var", "grad_weight", "grad_bias")
# BLOCK 64, C S about 8: a (3, 2, 45, 7) x has rows of 5 blocks, 15 blocks per channel dealt 4, 4, 4, 3 to S = 4
# chunks, chunks crossing rows
SMALL_BLOCKS = {"BLOCK": 64, "TARGET_PROGRAMS": 8}
UNEVEN = (3, 2, 45, 7)


@pytest.fixture
def small_blocks(monkeypatch):
    for name, value in SMALL_BLOCKS.items():
        monkeypatch.setattr(kernels, name, value)


def frame_mask_of(kind, n, t, dtype, generator):
    """(N, 1, T, 1) 0/1: None; "padded": each row valid up to a random length, row 1 (the only row when N = 1:
    its last frame) fully padded, row 0 full; "zeros": no valid frame."""
    if kind is None:
        return None
    if kind == "zeros" or n * t == 0:
        return torch.zeros((n, 1, t, 1), dtype=dtype, device=DEVICE)
    lengths = torch.randint(1, t + 1, (n,), generator=generator)
    lengths[0] = t if n > 1 else max(t - 1, 1)
    if n > 1:
        lengths[1] = 0
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(dtype)
    return mask[:, None, :, None].to(DEVICE)


def case_inputs(shape, dtype=torch.float64, residual=True, mask=None, mean=0.0):
    """Keyword inputs of the reference (x, residual, frame_mask, weight, bias, eps), fresh on every call:
    standard-normal x (+ ``mean``) and residual, weight 1 + N(0, 0.5^2) and bias N(0, 0.5^2) in the state dtype."""
    gen = torch.Generator()
    gen.seed()
    n, c, t, _ = shape

    def randn(size, dt):
        return torch.randn(size, generator=gen, dtype=torch.float64).to(device=DEVICE, dtype=dt)

    sdt = state_dtype(dtype)
    return {"x": (randn(shape, torch.float64) + mean).to(dtype),
            "residual": randn(shape, dtype) if residual else None,
            "frame_mask": frame_mask_of(mask, n, t, dtype, gen),
            "weight": 1 + 0.5 * randn((c,), sdt), "bias": 0.5 * randn((c,), sdt), "eps": EPS}


def grad_out_for(inputs) -> torch.Tensor:
    """A fresh standard-normal cotangent of out, in x's dtype."""
    x = inputs["x"]
    return torch.randn(x.shape, dtype=torch.float64).to(device=DEVICE, dtype=x.dtype)


def forward_args(inputs) -> tuple:
    """The forward schema's arguments (x, residual, frame_mask, weight, bias, eps)."""
    return tuple(inputs[k] for k in ("x", "residual", "frame_mask", "weight", "bias", "eps"))


def triton_run(inputs, grad_out, residual_grad=True) -> dict:
    """{name: value} of the raw Triton forward and backward (the backward on the forward's out and statistics)."""
    out, mean, var = kernels.batch_norm_relu_triton(*forward_args(inputs))
    grads = kernels.batch_norm_relu_backward_triton(grad_out, out, inputs["x"], inputs["frame_mask"],
                                                    inputs["weight"], mean, var, inputs["eps"], residual_grad)
    return dict(zip(("out", "mean", "var", "grad_x", "grad_residual", "grad_weight", "grad_bias"),
                    (out, mean, var, *grads)))


def reference_run(inputs, grad_out, dtype=None) -> dict:
    """As ``triton_run``, by the reference and its closed-form backward, on the inputs converted to ``dtype`` (x,
    residual, frame_mask, grad_out; weight and bias to its state dtype; default: unchanged)."""
    dtype = dtype or inputs["x"].dtype
    sdt = state_dtype(dtype)

    def cast(t, dt):
        return None if t is None else t.to(dt)

    x, mask, weight = inputs["x"].to(dtype), cast(inputs["frame_mask"], dtype), inputs["weight"].to(sdt)
    out, mean, var = batch_norm_relu_reference(x, weight, inputs["bias"].to(sdt),
                                               residual=cast(inputs["residual"], dtype), frame_mask=mask,
                                               eps=inputs["eps"], statistics=True)
    grads = batch_norm_relu_backward_reference(grad_out.to(dtype), out, x, mask, weight, mean, var, inputs["eps"],
                                               True)
    return dict(zip(("out", "mean", "var", "grad_x", "grad_residual", "grad_weight", "grad_bias"),
                    (out, mean, var, *grads)))


def errors(got, ref, floors=None) -> dict:
    """{name: relative error} of every value of ``got`` against ``ref`` (grad_weight / grad_bias relative to
    max(||ref||, the op's gradient_error_floors) when ``floors`` is given)."""
    floors = floors or {}
    return {name: rel_err(got[name], ref[name], floors.get(name.removeprefix("grad_"), 0.0)) for name in ref}


def assert_well_formed(got, inputs):
    x = inputs["x"]
    sdt = state_dtype(x.dtype)
    for name, t in got.items():
        dtype, shape = (sdt, x.shape[1:2]) if name in STATE_OUTPUTS else (x.dtype, x.shape)
        assert t.dtype == dtype and t.shape == shape and torch.isfinite(t).all(), name


# ----------------------------------------------------------------------------------------------
# float64 parity

CASES = {  # (shape, residual, frame mask); BLOCK = 1024 positions of a row per block
    "2x5x7x25-residual-padded": ((2, 5, 7, 25), True, "padded"),
    "1x3x1x17": ((1, 3, 1, 17), False, None),
    "1x3x1x17-residual-padded": ((1, 3, 1, 17), True, "padded"),  # its single frame: valid (length 1)
    "3x4x63x19-padded": ((3, 4, 63, 19), False, "padded"),  # rows of 2 blocks, S = 6
    "3x4x63x19-residual-zeros": ((3, 4, 63, 19), True, "zeros"),  # no valid frame: mean 0, var 0, count 1
    "2x3x5x9-residual": ((2, 3, 5, 9), True, None),
}


def test_cases_split_the_work():
    """The cases include rows of several blocks with S > 1; the patched blocks deal blocks unevenly, across rows."""
    x = torch.empty(CASES["3x4x63x19-padded"][0], device="meta")
    nb, total, per, s = kernels._chunks(x)
    assert nb == 2 and s > 1
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SMALL_BLOCKS.items():
            mp.setattr(kernels, name, value)
        assert kernels._chunks(torch.empty(UNEVEN, device="meta")) == (5, 15, 4, 4)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float64_parity(case):
    shape, residual, mask = CASES[case]
    inputs = case_inputs(shape, residual=residual, mask=mask)
    grad_out = grad_out_for(inputs)
    got = triton_run(inputs, grad_out)
    assert_well_formed(got, inputs)
    errs = errors(got, reference_run(inputs, grad_out))
    assert max(errs.values()) <= TOL[torch.float64], errs


@pytest.mark.parametrize("mask", [None, "padded", "zeros"])
def test_float64_parity_several_chunks_uneven(small_blocks, mask):
    inputs = case_inputs(UNEVEN, residual=True, mask=mask)
    grad_out = grad_out_for(inputs)
    errs = errors(triton_run(inputs, grad_out), reference_run(inputs, grad_out))
    assert max(errs.values()) <= TOL[torch.float64], errs


@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
def test_float64_gradients_through_autograd(with_residual):
    """torch.autograd.grad through the op's registered autograd equals the raw backward bit for bit and the
    reference's autograd within 1e-10 (a residual that does not require grad: the backward skips it)."""
    inputs = case_inputs((2, 3, 11, 5), residual=True, mask="padded")
    grad_out = grad_out_for(inputs)
    names = ("x", "residual", "weight", "bias") if with_residual else ("x", "weight", "bias")

    def grads_of(fn):
        leaves = {k: inputs[k].clone().requires_grad_(k in names) for k in ("x", "residual", "weight", "bias")}
        out = fn(leaves)
        return dict(zip(names, torch.autograd.grad(out, [leaves[k] for k in names], grad_out)))

    got = grads_of(lambda t: kernels.batch_norm_relu_triton(t["x"], t["residual"], inputs["frame_mask"], t["weight"],
                                                            t["bias"], EPS)[0])
    ref = grads_of(lambda t: batch_norm_relu_reference(t["x"], t["weight"], t["bias"], residual=t["residual"],
                                                       frame_mask=inputs["frame_mask"], eps=EPS))
    raw = triton_run(inputs, grad_out)
    for name in names:
        assert torch.equal(got[name], raw[f"grad_{name}"]), name
        assert rel_err(got[name], ref[name]) <= TOL[torch.float64], name


# ----------------------------------------------------------------------------------------------
# float32, float16

LOW_PRECISION_CASES = [((2, 5, 7, 25), "padded"), ((3, 4, 63, 19), None)]


@pytest.mark.parametrize("shape,mask", LOW_PRECISION_CASES, ids=["2x5x7x25-padded", "3x4x63x19"])
def test_float32_parity(shape, mask):
    inputs = case_inputs(shape, dtype=torch.float32, mask=mask)
    grad_out = grad_out_for(inputs)
    got = triton_run(inputs, grad_out)
    assert_well_formed(got, inputs)
    errs = errors(got, reference_run(inputs, grad_out, torch.float64), gradient_error_floors(inputs, grad_out))
    assert max(errs.values()) <= TOL[torch.float32], errs


@pytest.mark.parametrize("shape,mask", LOW_PRECISION_CASES, ids=["2x5x7x25-padded", "3x4x63x19"])
def test_float16_within_twice_the_reference_error(shape, mask):
    """Every value within 2x the error (against float64) of the reference run on the float16 inputs in the float32
    state dtype, plus the float32 tolerance (mean, var and the parameters' gradients are float32 sums of exact
    values: their errors are float32 roundings, tiny in both, and their ratio is chance)."""
    inputs = case_inputs(shape, dtype=torch.float16, mask=mask)
    grad_out = grad_out_for(inputs)
    got = triton_run(inputs, grad_out)
    assert_well_formed(got, inputs)
    ref64 = reference_run(inputs, grad_out, torch.float64)
    floors = gradient_error_floors(inputs, grad_out)
    errs = errors(got, ref64, floors)
    low_errs = errors(reference_run(inputs, grad_out), ref64, floors)
    for name, err in errs.items():
        assert err <= 2 * low_errs[name] + TOL[torch.float32], (name, err, low_errs[name])


def test_float32_large_mean_variance():
    """x = 1000 + N(0, 1) in float32: the shifted one-pass sums keep var within 1e-4 (the unshifted E[x^2] -
    E[x]^2 in float32 is off by ~1e-2: a rounding of ~1e6)."""
    inputs = case_inputs((2, 3, 20, 25), dtype=torch.float32, residual=False, mask="padded", mean=1000.0)
    _, mean, var = kernels.batch_norm_relu_triton(*forward_args(inputs))
    ref = reference_run(inputs, torch.zeros_like(inputs["x"]), torch.float64)
    assert rel_err(var, ref["var"]) <= 1e-4
    assert rel_err(mean, ref["mean"]) <= 1e-6
    x, m = inputs["x"], inputs["frame_mask"]
    count = m.sum() * x.shape[3]
    naive = (x.square() * m).sum((0, 2, 3)) / count - ((x * m).sum((0, 2, 3)) / count).square()
    assert rel_err(naive, ref["var"]) > 1e-3  # the test can tell


def test_float32_zero_mean_channels():
    """x = N(0, 1) in float32, 7500 positions per channel: mean (~1e-2) within 2e-6 relative. The shifted sum
    sum (x - K) is ~count |K|: summed over the lanes and merged in fp32 its rounding would be mean's error (6.3e-6
    here; with the kernels' fp64 lane sums and merge, 6.8e-7)."""
    inputs = case_inputs((2, 4, 150, 25), dtype=torch.float32, residual=False)
    _, mean, _ = kernels.batch_norm_relu_triton(*forward_args(inputs))
    ref = reference_run(inputs, torch.zeros_like(inputs["x"]), torch.float64)
    assert rel_err(mean, ref["mean"]) <= 2e-6


# ----------------------------------------------------------------------------------------------
# memory, determinism, sizes

def test_every_output_written(small_blocks, monkeypatch):
    """Every buffer the launchers allocate starts as NaN (the linear attention's POISON_OUTPUTS switch that
    ``_empty`` reads): the outputs are finite and equal to an unpoisoned run."""
    inputs = case_inputs(UNEVEN, residual=True, mask="padded")
    grad_out = grad_out_for(inputs)
    clean = triton_run(inputs, grad_out)
    monkeypatch.setattr(la_kernels, "POISON_OUTPUTS", True)
    poisoned = triton_run(inputs, grad_out)
    assert_well_formed(poisoned, inputs)
    for name, t in poisoned.items():
        assert torch.equal(t, clean[name]), name


def test_bitwise_deterministic(small_blocks):
    inputs = case_inputs(UNEVEN, dtype=torch.float32, residual=True, mask="padded")
    grad_out = grad_out_for(inputs)
    first, second = triton_run(inputs, grad_out), triton_run(inputs, grad_out)
    for name, t in first.items():
        assert torch.equal(t, second[name]), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_no_residual_grad_returns_an_empty_tensor(dtype):
    inputs = case_inputs((2, 3, 4, 5), dtype=dtype, residual=False, mask="padded")
    grad_out = grad_out_for(inputs)
    with_res = triton_run(inputs, grad_out, residual_grad=True)
    without = triton_run(inputs, grad_out, residual_grad=False)
    assert without["grad_residual"].shape == (0,) and without["grad_residual"].dtype == dtype
    for name in ("grad_x", "grad_weight", "grad_bias"):
        assert torch.equal(without[name], with_res[name]), name


@pytest.mark.parametrize("shape", [(2, 3, 0, 5), (2, 0, 4, 5), (0, 3, 4, 5)], ids=str)
def test_no_element_launches_nothing(monkeypatch, shape):
    launches = []
    original = kernels.wrap_triton
    monkeypatch.setattr(kernels, "wrap_triton", lambda kernel: launches.append(kernel) or original(kernel))
    monkeypatch.setattr(la_kernels, "POISON_OUTPUTS", True)
    inputs = case_inputs(shape, mask="padded")
    got = triton_run(inputs, grad_out_for(inputs))
    assert not launches
    c = shape[1]
    for name in STATE_OUTPUTS:
        assert torch.equal(got[name], torch.zeros(c, dtype=torch.float64, device=DEVICE)), name
    assert all(got[name].shape == shape for name in ("out", "grad_x", "grad_residual"))


def test_launches_are_the_registry_kernels():
    """Forward 2 launches, backward 2 (the stats and apply passes each way), in ``OpSpec.triton_kernels``' order."""
    original = kernels.wrap_triton
    launches = []

    def counting_wrap(kernel):
        launches.append(getattr(kernel, "__name__", None) or kernel.fn.__name__)
        return original(kernel)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "wrap_triton", counting_wrap)
        inputs = case_inputs((2, 3, 4, 5), mask="padded")
        triton_run(inputs, grad_out_for(inputs))
    assert launches == list(SPEC.triton_kernels)


# ----------------------------------------------------------------------------------------------
# argument errors of the raw ops

def _forward_dict(inputs) -> dict:
    return dict(zip(("x", "residual", "frame_mask", "weight", "bias", "eps"), forward_args(inputs)))


def _backward_dict(inputs) -> dict:
    x = inputs["x"]
    c = x.shape[1]
    return {"grad_out": grad_out_for(inputs), "out": grad_out_for(inputs).abs(), "x": x,
            "frame_mask": inputs["frame_mask"], "weight": inputs["weight"],
            "mean": torch.zeros(c, dtype=x.dtype, device=DEVICE), "var": torch.ones(c, dtype=x.dtype, device=DEVICE),
            "eps": EPS, "residual_grad": True}


@pytest.mark.parametrize("op,name,change,expected", [
    ("batch_norm_relu", "x", non_contiguous, "a contiguous tensor"),
    ("batch_norm_relu", "frame_mask", lambda m: m[:, :, :-1].contiguous(), "shape (N, 1, T, 1) = (2, 1, 7, 1)"),
    ("batch_norm_relu_backward", "grad_out", non_contiguous, "a contiguous tensor"),
    ("batch_norm_relu_backward", "frame_mask", lambda m: m.expand(2, 1, 7, 3).contiguous(),
     "shape (N, 1, T, 1) = (2, 1, 7, 1)"),
], ids=["fwd-x-strides", "fwd-frame_mask-shape", "bwd-grad_out-strides", "bwd-frame_mask-shape"])
def test_raw_ops_name_the_bad_argument(op, name, change, expected):
    inputs = case_inputs((2, 3, 7, 4), residual=True, mask="padded")
    args = _forward_dict(inputs) if op == "batch_norm_relu" else _backward_dict(inputs)
    assert_raw_triton_op_rejects(op, args | {name: change(args[name])}, name, expected)
