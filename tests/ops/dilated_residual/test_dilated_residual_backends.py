"""Parity of the fused backends of trgnet_fast.ops.dilated_residual (the boundary branch's dilated residual layer as
one op), each test parametrised over the op's ``OpSpec.backends`` (``trgnet_fast/ops/dilated_residual/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.dilated_residual``, its C++ kernels on CPU tensors (its CUDA kernels run
  in the ``gpu`` tests and in the CPU emulation, tests/kernels);
* ``triton``: ``torch.ops.trgnet_triton.dilated_residual``, on the GPU or in Triton's CPU interpreter (small shapes).

Forward and every gradient (x, both convs' weights and biases) against the float64 reference at odd sizes, every
dilation class (d below a frame tile, d of several tiles, d >= T), the three sequence layouts, with and without mask
and dropout; empty sequences and frames outside every sequence; determinism; fp16; opcheck; gradcheck; compile; a
property test over random draws. Tolerances (docs/architecture.md#parity): fp64 <= 1e-10, fp32 <= 1e-5 (or twice a
plain float32 run's error, ``op_cases.OpCases.tolerances``). Fresh random inputs every run.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import strategies as st

from dilated_residual_cases import CASES as CASES_OF_OP
from dilated_residual_cases import case_inputs, raw_args, size
from hypothesis_cases import check_drawn_cases, examples
from op_checks import (BACKEND_DEVICE, TOL, assert_compiled_matches_eager, assert_raw_ops_deterministic,
                       backends_and_devices, fused_backend_cases, fused_backends, opcheck_raw_ops)
from trgnet_fast.model.temporal import DilatedResidualLayer
from trgnet_fast.ops.dilated_residual import OP_NAME
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]

CASES = {  # every dilation class and layout, mask and dropout; odd C and T
    "d1": size(2, 13, c=8, dilation=1),
    "d2-mask": size(2, 13, c=12, dilation=2, masked=True),
    "d16>T": size(1, 9, c=4, dilation=16, masked=True),
    "d70-tiles": size(2, 150, c=8, dilation=70),
    "rows-dropout": size(3, 40, c=8, dilation=3, layout="rows", masked=True, dropout=True),
    "packed-dropout": size(3, 41, c=20, dilation=5, layout="packed", dropout=True),
    "T1": size(2, 1, c=4, dilation=1),
    "C64-d512": size(1, 70, c=64, dilation=512, masked=True, dropout=True),
}


@pytest.mark.parametrize("backend, case, dtype", fused_backend_cases(SPEC, CASES))
def test_forward_and_every_gradient(backend, case, dtype):
    """The output and the gradients of x and both convs' weights and biases against the float64 reference: every
    dilation class, layout, mask and dropout."""
    CASES_OF_OP.assert_case_close_to_reference(CASES[case], backend, dtype)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_empty_sequences_and_uncovered_frames(backend):
    CASES_OF_OP.assert_empty_sequences_and_uncovered_frames(size(3, 12, c=8, dilation=2, layout="rows", masked=True),
                                                            backend, BACKEND_DEVICE[backend], TOL[torch.float64])


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_dropout_acts_and_follows_the_seed(backend):
    CASES_OF_OP.assert_dropout_follows_the_seed(CASES["rows-dropout"], backend, BACKEND_DEVICE[backend],
                                                {"dropout": 0.0})


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_bitwise_deterministic(ops, backend):
    args = raw_args(case_inputs(CASES["packed-dropout"], dtype=torch.float32, device=BACKEND_DEVICE[backend]))
    grads = assert_raw_ops_deterministic(ops.dilated_residual, ops.dilated_residual_backward, args,
                                         lambda out: (torch.randn_like(out), *args))
    assert len(grads) == 5


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, dtypes=(torch.float16, torch.bfloat16)))
def test_16bit_forward_and_grads(backend, dtype):
    CASES_OF_OP.assert_16bit_forward_and_grads(CASES["d2-mask"], backend, BACKEND_DEVICE[backend], dtype)


@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device):
    """Schema, fake-tensor and autograd registration checks of the forward and backward ops, x and the four weights
    and biases requiring grad."""
    opcheck_raw_ops(ops.dilated_residual, ops.dilated_residual_backward,
                    raw_args(case_inputs(CASES["packed-dropout"], device=device)), (0, 3, 4, 5, 6),
                    lambda args: [(torch.randn_like(ops.dilated_residual(*args)), *args)], backend, device)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend):
    """Finite differences of the fused op w.r.t. x and both weights (the biases follow from the parity tests)."""
    CASES_OF_OP.assert_gradcheck(size(2, 5, c=4, dilation=2, layout="rows", masked=True), backend,
                                 ("x", "conv_weight", "conv_out_weight"))


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) of a DilatedResidualLayer on the fused backend traces the op (fake kernel and
    autograd registration, no graph break) and matches eager, gradients of every parameter and x included."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = DilatedResidualLayer(4, 16).to(device).eval()
    layer.backend = backend
    x = torch.randn(2, 16, 37, device=device, requires_grad=True)
    mask = torch.ones(2, 1, 37, device=device)
    mask[1, :, 30:] = 0
    assert_compiled_matches_eager(layer, (x, mask), 1e-5)


DRAWS = dict(n=st.integers(1, 3), c=st.integers(1, 20), t=st.integers(1, 40),
             dilation=st.sampled_from([1, 2, 3, 7, 16, 64, 512]),
             layout=st.sampled_from(["published", "rows", "packed"]), masked=st.booleans(), dropout=st.booleans(),
             memory=st.sampled_from(["contiguous", "transposed", "strided"]), seed=st.integers(0, 2 ** 32 - 1),
             dtype=st.sampled_from([torch.float32, torch.float64]))


def _drawn_case(backend, n, c, t, dilation, layout, masked, dropout, memory, seed, dtype):
    s = size(n, max(t, n), c=c, dilation=dilation, layout=layout, masked=masked, dropout=dropout)
    CASES_OF_OP.assert_seeded_case_close_to_reference(s, backend, seed, dtype, {"x": (memory, (1, 2))})


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_fused_backend_property(backend):
    """Random sizes, dilations, layouts (lengths drawn down to 1 frame), masks, dropout, dtypes and memory layouts
    of x, each against the float64 reference."""
    check_drawn_cases(partial(_drawn_case, backend), examples(backend, 12, 60), **DRAWS)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(SPEC.parity_sizes["cuda"])), ids=lambda i: f"size{i}")
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_paper_sizes(backend, index):
    """The GPU kernels at TRGNet's size (N = 8, T = 6000, C = 64, dilation 512 and 1 with mask and dropout),
    C = 256 and a packed batch: float32 output and every gradient against the float64 reference."""
    CASES_OF_OP.assert_gpu_paper_size_close_to_reference(backend, index)
