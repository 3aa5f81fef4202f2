"""Parity of the fused backends of trgnet_fast.ops.batch_norm_relu (SP's BatchNorm + residual + ReLU as one op), each
test parametrised over the op's ``OpSpec.backends`` (``trgnet_fast/ops/batch_norm_relu/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.batch_norm_relu``, its C++ kernels on CPU tensors (its CUDA kernels run in
  the ``gpu`` tests and in the CPU emulation, tests/kernels);
* ``triton``: ``torch.ops.trgnet_triton.batch_norm_relu``, on the GPU or in Triton's CPU interpreter (small shapes).

Forward, statistics and every gradient (x, residual, weight, bias) against the float64 reference at odd sizes, with
and without residual and frame mask (padded frames, a fully padded video, no valid frame at all); the backward on its
own; determinism; fp16; opcheck; gradcheck; compile; a property test over random draws. Tolerances
(docs/architecture.md#parity): fp64 <= 1e-10, fp32 <= 1e-5 (or twice a plain float32 run's error,
``op_cases.OpCases.tolerances``). Fresh random inputs every run.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import strategies as st

from batch_norm_relu_cases import CASES as CASES_OF_OP
from batch_norm_relu_cases import assert_close_to_reference, case_inputs, raw_args, size
from hypothesis_cases import check_drawn_cases, examples
from op_checks import (BACKEND_DEVICE, TOL, assert_compiled_matches_eager, assert_raw_ops_deterministic,
                       backends_and_devices, fused_backend_cases, fused_backends, opcheck_raw_ops, rel_err)
from trgnet_fast.ops.batch_norm_relu import OP_NAME, batch_norm_relu, batch_norm_relu_backward
from trgnet_fast.ops.batch_norm_relu.reference import batch_norm_relu_backward_reference, batch_norm_relu_reference
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]

CASES = {  # odd C, T, V; residual and mask crossed; one frame; a large channel mean
    "plain": size(2, 13, c=5, v=17),
    "residual": size(3, 7, c=3, v=25, residual=True),
    "masked": size(3, 11, c=4, v=19, masked=True),
    "masked-residual": size(4, 63, c=6, v=25, masked=True, residual=True),
    "T1": size(2, 1, c=3, v=17, residual=True),
    "many-blocks": size(3, 300, c=2, v=25, masked=True, residual=True),
}


@pytest.mark.parametrize("backend, case, dtype", fused_backend_cases(SPEC, CASES))
def test_forward_and_every_gradient(backend, case, dtype):
    """The output and the gradients of x, residual, weight and bias against the float64 reference, with and
    without residual and mask, one frame and many blocks of frames."""
    CASES_OF_OP.assert_case_close_to_reference(CASES[case], backend, dtype)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_statistics_and_the_backward_alone(backend):
    """The statistics (mean, biased var) and ``batch_norm_relu_backward`` (the SP block's entry: x given again)
    against the reference and its closed form, with and without the residual's gradient."""
    device = BACKEND_DEVICE[backend]
    inputs = case_inputs(CASES["masked-residual"], device=device)
    out, mean, var = batch_norm_relu(**inputs, statistics=True, backend=backend)
    _, ref_mean, ref_var = batch_norm_relu_reference(**inputs, statistics=True)
    assert rel_err(mean, ref_mean) <= TOL[torch.float64] and rel_err(var, ref_var) <= TOL[torch.float64]
    grad_out = torch.randn_like(out)
    backward_args = (grad_out, out, inputs["x"], inputs["frame_mask"], inputs["weight"], mean, var)
    for residual_grad in (True, False):
        got = batch_norm_relu_backward(*backward_args, eps=inputs["eps"], residual_grad=residual_grad,
                                       backend=backend)
        expected = batch_norm_relu_backward_reference(*backward_args, inputs["eps"], residual_grad)
        assert (got[1] is None) == (not residual_grad)
        for name, g, e in zip(("x", "residual", "weight", "bias"), got, expected):
            if g is not None:
                assert rel_err(g, e) <= TOL[torch.float64], name


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_a_fully_padded_video_and_no_valid_frame(backend):
    """A video without valid frames takes no part in the statistics (its frames are normalised all the same); no
    valid frame at all gives mean 0, var 0 (count 1), as the reference."""
    device = BACKEND_DEVICE[backend]
    inputs = case_inputs(CASES["masked-residual"], device=device)
    inputs["frame_mask"][1] = 0
    assert_close_to_reference(inputs, backend, TOL[torch.float64])
    inputs["frame_mask"].zero_()
    _, mean, var = batch_norm_relu(**inputs, statistics=True, backend=backend)
    assert torch.equal(mean, torch.zeros_like(mean)) and torch.equal(var, torch.zeros_like(var))
    assert_close_to_reference(inputs, backend, TOL[torch.float64])


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_a_large_channel_mean_in_float32(backend):
    """x = 1000 + N(0, 1) in float32: the one-pass variance of the kernels (shifted sums) keeps var within 1e-4 of
    the float64 value, where the plain sum of squares would lose it all (1e6 x float32's 6e-8 ~ the variance)."""
    device = BACKEND_DEVICE[backend]
    inputs = case_inputs(size(2, 40, c=3, v=25, masked=True), device=device)
    inputs["x"] = inputs["x"] - inputs["x"].mean() + 1000
    _, ref_mean, ref_var = batch_norm_relu_reference(**inputs, statistics=True)
    low = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    _, mean, var = batch_norm_relu(**low, statistics=True, backend=backend)
    assert rel_err(mean, ref_mean) <= 1e-6 and rel_err(var, ref_var) <= 1e-4


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_bitwise_deterministic(ops, backend):
    inputs = case_inputs(CASES["many-blocks"], dtype=torch.float32, device=BACKEND_DEVICE[backend])

    def backward_args(outputs):
        out, mean, var = outputs
        return (torch.randn_like(out), out, inputs["x"], inputs["frame_mask"], inputs["weight"], mean, var,
                inputs["eps"], True)

    grads = assert_raw_ops_deterministic(ops.batch_norm_relu, ops.batch_norm_relu_backward, raw_args(inputs),
                                         backward_args)
    assert len(grads) == 4


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, dtypes=(torch.float16, torch.bfloat16)))
def test_16bit_forward_and_grads(backend, dtype):
    """16-bit x and residual, weight and bias in float32 (the state dtype): the output and the gradients within 2x
    the error of the reference run in that dtype."""
    CASES_OF_OP.assert_16bit_forward_and_grads(CASES["masked-residual"], backend, BACKEND_DEVICE[backend], dtype)


@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device):
    """Schema, fake-tensor and autograd registration checks of the forward op (x, residual, weight and bias
    requiring grad) and of the backward op with and without the residual's gradient."""
    def backward_calls(args):
        out, mean, var = ops.batch_norm_relu(*args)
        return [(torch.randn_like(out), out, args[0], args[2], args[3], mean, var, args[5], residual_grad)
                for residual_grad in (True, False)]

    opcheck_raw_ops(ops.batch_norm_relu, ops.batch_norm_relu_backward,
                    raw_args(case_inputs(CASES["masked-residual"], device=device)), (0, 1, 3, 4), backward_calls,
                    backend, device)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend):
    """Finite differences of the fused op w.r.t. x, residual, weight and bias (float64)."""
    CASES_OF_OP.assert_gradcheck(size(2, 5, c=3, v=17, masked=True, residual=True), backend,
                                 ("x", "residual", "weight", "bias"))


class _Tail(torch.nn.Module):
    """A BatchNorm's parameters and the op, for torch.compile."""

    def __init__(self, channels, backend):
        super().__init__()
        self.weight = torch.nn.Parameter(1 + 0.1 * torch.randn(channels))
        self.bias = torch.nn.Parameter(0.1 * torch.randn(channels))
        self.backend = backend

    def forward(self, x, residual, frame_mask):
        return batch_norm_relu(x, self.weight, self.bias, residual=residual, frame_mask=frame_mask,
                               backend=self.backend)


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) over the fused op traces it (fake kernel and autograd registration, no graph
    break) and matches eager, the gradients of x, the residual and the parameters included."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    tail = _Tail(6, backend).to(device)
    x = torch.randn(2, 6, 9, 17, device=device, requires_grad=True)
    residual = torch.randn(2, 6, 9, 17, device=device, requires_grad=True)
    frame_mask = torch.ones(2, 1, 9, 1, device=device)
    frame_mask[1, :, 6:] = 0
    assert_compiled_matches_eager(tail, (x, residual, frame_mask), 1e-5)


DRAWS = dict(n=st.integers(1, 3), c=st.integers(1, 9), t=st.integers(1, 40), v=st.sampled_from([1, 17, 19, 25]),
             masked=st.booleans(), residual=st.booleans(), memory=st.sampled_from(["contiguous", "transposed",
                                                                                     "strided"]),
             seed=st.integers(0, 2 ** 32 - 1), dtype=st.sampled_from([torch.float32, torch.float64]))


def _drawn_case(backend, n, c, t, v, masked, residual, memory, seed, dtype):
    CASES_OF_OP.assert_seeded_case_close_to_reference(size(n, t, c=c, v=v, masked=masked, residual=residual), backend,
                                                      seed, dtype, {"x": (memory, (2, 3))})


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_fused_backend_property(backend):
    """Random sizes, masks (lengths down to 1 frame), residual or not, dtypes and memory layouts of x, each against
    the float64 reference."""
    check_drawn_cases(partial(_drawn_case, backend), examples(backend, 10, 50), **DRAWS)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(SPEC.parity_sizes["cuda"])), ids=lambda i: f"size{i}")
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_paper_sizes(backend, index):
    """The GPU kernels at SP's size (N = 8, T = 6000, C = 64, V = 25, masked, with and without the residual), odd
    sizes and one frame: float32 output and every gradient against the float64 reference."""
    CASES_OF_OP.assert_gpu_paper_size_close_to_reference(backend, index)
