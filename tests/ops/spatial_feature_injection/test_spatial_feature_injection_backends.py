"""Parity of the fused backends of trgnet_fast.ops.spatial_feature_injection (STI's SFI fusion as one op), each test
parametrised over the op's ``OpSpec.backends`` (``trgnet_fast/ops/spatial_feature_injection/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.spatial_feature_injection``, its C++ kernels on CPU tensors (its CUDA
  kernels run in the ``gpu`` tests and in the CPU emulation, tests/kernels);
* ``triton``: ``torch.ops.trgnet_triton.spatial_feature_injection``, on the GPU or in Triton's CPU interpreter.

Forward and every gradient (group, h, the 8 weights and biases) against the float64 reference at odd sizes (C, G,
V, T), group as a channel slice of STI's split or contiguous, with and without mask and dropout; a strided group
equals its contiguous copy; masked frames; determinism; fp16; opcheck; gradcheck; compile; a property test.
Tolerances (docs/architecture.md#parity): fp64 <= 1e-10, fp32 <= 1e-5 (or twice a plain float32 run's error,
``op_cases.OpCases.tolerances``). Fresh random inputs every run.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import strategies as st

from hypothesis_cases import check_drawn_cases, examples
from op_checks import (BACKEND_DEVICE, assert_compiled_matches_eager, assert_raw_ops_deterministic,
                       backends_and_devices, fused_backend_cases, fused_backends, opcheck_raw_ops, raw_ops)
from spatial_feature_injection_cases import CASES as CASES_OF_OP
from spatial_feature_injection_cases import case_inputs, fused, raw_args, run, size
from trgnet_fast.model.temporal import SpatialFeatureInjection
from trgnet_fast.ops.registry import OPS
from trgnet_fast.ops.spatial_feature_injection import OP_NAME

SPEC = OPS[OP_NAME]

CASES = {  # odd C, G, V and T; the group slice or contiguous; mask and dropout
    "C8-G4V5": size(2, 13, c=8, g=4, v=5),
    "C12-G8V3-mask-dropout": size(2, 21, c=12, g=8, v=3, masked=True, dropout=True),
    "C4-G2V7-contiguous": size(1, 5, c=4, g=2, v=7, group_slice=False),
    "C20-G8V25-T1": size(2, 1, c=20, g=8, v=25, masked=True),
    "C64-G8V25-mask-dropout": size(1, 37, c=64, g=8, v=25, masked=True, dropout=True),
}


@pytest.mark.parametrize("backend, case, dtype", fused_backend_cases(SPEC, CASES))
def test_forward_and_every_gradient(backend, case, dtype):
    """The output and the gradients of group, h and the 8 weights and biases against the float64 reference,
    group a slice of STI's split or contiguous."""
    CASES_OF_OP.assert_case_close_to_reference(CASES[case], backend, dtype)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_a_strided_group_equals_its_contiguous_copy(backend):
    """The kernels take group's strides: a channel slice of STI's split (no copy), a transposed storage and every
    other element of a wider buffer give the contiguous copy's output and gradients, bit for bit."""
    inputs = case_inputs(size(2, 17, c=8, g=4, v=5, masked=True), device=BACKEND_DEVICE[backend])
    group = inputs["group"]
    wide = torch.full((2, 4, 17, 10), float("nan"), dtype=group.dtype, device=group.device)
    wide[..., ::2] = group
    grad_out = torch.randn_like(inputs["h"])
    expected = _raw_run(backend, inputs | {"group": group.contiguous()}, grad_out)
    for strided in (group, group.transpose(2, 3).contiguous().transpose(2, 3), wide[..., ::2]):
        assert not strided.is_contiguous()
        got = _raw_run(backend, inputs | {"group": strided}, grad_out)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def _raw_run(backend, inputs, grad_out):
    """The raw forward and backward ops of ``backend`` on ``inputs`` as given (no copies: strides kept)."""
    ops = raw_ops(backend)
    args = raw_args(inputs)
    out = ops.spatial_feature_injection(*args)
    return (out, *ops.spatial_feature_injection_backward(grad_out, *args))


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_masked_frames_give_zero_and_no_gradient(backend):
    inputs = case_inputs(size(2, 15, c=8, g=4, v=5, masked=True, dropout=True), device=BACKEND_DEVICE[backend])
    out, grads = run(fused(backend), inputs, torch.randn_like(inputs["h"]))
    off = inputs["mask"][:, 0] == 0
    assert off.any()
    assert not out.permute(0, 2, 1)[off].any() and not grads["h"].permute(0, 2, 1)[off].any()
    assert not grads["group"].permute(0, 2, 1, 3)[off].any()


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_dropout_acts_and_follows_the_seed(backend):
    CASES_OF_OP.assert_dropout_follows_the_seed(CASES["C12-G8V3-mask-dropout"], backend, BACKEND_DEVICE[backend],
                                                {"dropout": 0.0}, min_change=0.02)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_bitwise_deterministic(ops, backend):
    inputs = case_inputs(CASES["C64-G8V25-mask-dropout"], dtype=torch.float32, device=BACKEND_DEVICE[backend])
    args = raw_args(inputs)
    grads = assert_raw_ops_deterministic(ops.spatial_feature_injection, ops.spatial_feature_injection_backward, args,
                                         lambda out: (torch.randn_like(out), *args))
    assert len(grads) == 10 and grads[0].is_contiguous() and grads[0].shape == inputs["group"].shape


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, dtypes=(torch.float16, torch.bfloat16)))
def test_16bit_forward_and_grads(backend, dtype):
    CASES_OF_OP.assert_16bit_forward_and_grads(CASES["C12-G8V3-mask-dropout"], backend, BACKEND_DEVICE[backend], dtype)


@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device):
    """Schema, fake-tensor and autograd registration checks of the forward and backward ops, group, h and the 8
    weights and biases requiring grad."""
    inputs = case_inputs(size(2, 9, c=8, g=4, v=3, masked=True, dropout=True, group_slice=False), device=device)

    def backward_calls(args):
        return [(torch.randn_like(ops.spatial_feature_injection(*args)), *args)]

    opcheck_raw_ops(ops.spatial_feature_injection, ops.spatial_feature_injection_backward, raw_args(inputs),
                    (0, 1, *range(3, 11)), backward_calls, backend, device)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend):
    """Finite differences of the fused op w.r.t. group, h and the first and last weights."""
    CASES_OF_OP.assert_gradcheck(size(2, 3, c=4, g=2, v=3, masked=True), backend,
                                 ("group", "h", "conv_s_weight", "ff2_weight"))


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter)
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) of an SFI module on the fused backend traces the op (no graph break) and
    matches eager, gradients of every parameter, group and h included."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = SpatialFeatureInjection(5, 16).to(device).eval()
    layer.backend = backend
    group = torch.randn(2, 24, 37, 5, device=device)[:, 8:16].requires_grad_(True)
    h = torch.randn(2, 16, 37, device=device, requires_grad=True)
    mask = torch.ones(2, 1, 37, device=device)
    mask[1, :, 30:] = 0
    assert_compiled_matches_eager(layer, (group, h, mask), 1e-5)


DRAWS = dict(n=st.integers(1, 3), c=st.integers(1, 20), g=st.integers(1, 8), v=st.integers(1, 25),
             t=st.integers(1, 30), masked=st.booleans(), dropout=st.booleans(), group_slice=st.booleans(),
             seed=st.integers(0, 2 ** 32 - 1), dtype=st.sampled_from([torch.float32, torch.float64]))


def _drawn_case(backend, n, c, g, v, t, masked, dropout, group_slice, seed, dtype):
    s = size(n, t, c=c, g=g, v=v, masked=masked, dropout=dropout, group_slice=group_slice)
    CASES_OF_OP.assert_seeded_case_close_to_reference(s, backend, seed, dtype)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_fused_backend_property(backend):
    """Random sizes, masks, dropout, dtypes and group layouts, each against the float64 reference."""
    check_drawn_cases(partial(_drawn_case, backend), examples(backend, 10, 50), **DRAWS)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(SPEC.parity_sizes["cuda"])), ids=lambda i: f"size{i}")
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_paper_sizes(backend, index):
    """The GPU kernels at TRGNet's size (N = 8, T = 6000, C = 64, G = 8, V = 25, with mask and dropout), C = 256
    and odd sizes: float32 output and every gradient against the float64 reference."""
    CASES_OF_OP.assert_gpu_paper_size_close_to_reference(backend, index)
