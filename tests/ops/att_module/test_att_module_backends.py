"""Parity of the fused backends of trgnet_fast.ops.att_module (the whole AttModule as one op), each test
parametrised over the op's ``OpSpec.backends`` (``trgnet_fast/ops/att_module/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.att_module``, its C++ kernels on CPU tensors (its CUDA kernels run in
  the ``gpu`` tests and in the CPU emulation, tests/kernels);
* ``triton``: ``torch.ops.trgnet_triton.att_module``, on the GPU or in Triton's CPU interpreter (small shapes).

Forward and every gradient (x, values, the 12 weights and biases, alpha) against the float64 reference at odd
sizes, every dilation class (d below a frame tile, d of several tiles, d >= T), both modes, the three sequence
layouts (published, padded rows with lengths, packed), with and without mask and dropout; the saved statistics
and states; empty sequences and frames outside every sequence; determinism; fp16; opcheck; gradcheck.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against a float64 reference, fp64 <= 1e-10,
fp32 <= 1e-5, fp16 <= 2x the error of the same-dtype PyTorch reference. Fresh random inputs every run.
"""
from __future__ import annotations

import pytest
import torch

from att_module_cases import CASES as CASES_OF_OP
from att_module_cases import case_inputs, raw_args, size
from op_checks import (BACKEND_DEVICE, TOL, assert_compiled_matches_eager, assert_raw_ops_deterministic,
                       backends_and_devices, fused_backend_cases, fused_backends, opcheck_raw_ops, rel_err)
from trgnet_fast.model.attention import AttModule
from trgnet_fast.ops.att_module import OP_NAME
from trgnet_fast.ops.att_module.reference import sequence_spans
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]

CASES = {  # every dilation class, mode, layout, mask and dropout; odd C, T and head dims
    "enc-d1": size(2, 13, c=8, heads=4, dilation=1),
    "dec-d2-mask": size(2, 13, c=8, heads=4, dilation=2, mode="decoder", masked=True),
    "enc-d16>T": size(1, 9, c=12, heads=4, dilation=16, masked=True),
    "dec-d70-tiles": size(2, 150, c=8, heads=2, dilation=70, mode="decoder"),
    "enc-rows-dropout": size(3, 40, c=8, heads=4, dilation=3, layout="rows", masked=True, dropout=True),
    "dec-packed-dropout": size(3, 41, c=20, heads=2, dilation=5, mode="decoder", layout="packed", dropout=True),
    "enc-packed-mask": size(3, 30, c=8, heads=4, dilation=4, layout="packed", masked=True),
    "enc-T1": size(2, 1, c=4, heads=4, dilation=1),
    "dec-C64": size(1, 70, c=64, heads=4, dilation=8, mode="decoder", masked=True, dropout=True),
}


@pytest.mark.parametrize("backend, case, dtype", fused_backend_cases(SPEC, CASES))
def test_forward_and_every_gradient(backend, case, dtype):
    """The output and the gradients of x, values, the 12 weights and biases and alpha against the float64
    reference: every dilation class, mode, layout, mask and dropout."""
    CASES_OF_OP.assert_case_close_to_reference(CASES[case], backend, dtype)


def _expected_states(inputs):
    """norm_stats (N, 2, C), kv_state (N, H, D, D), key_sum (N, H, D) of every sequence, float64, from the
    reference's formulas."""
    x, heads = inputs["x"].double(), inputs["heads"]
    c = x.shape[1]
    stats, kvs, ksums = [], [], []
    for row, start, length in sequence_spans(x, inputs["cu_seqlens"]):
        seq = x[row:row + 1, :, start:start + length]
        d = inputs["dilation"]
        o = torch.relu(torch.nn.functional.conv1d(seq, inputs["conv_weight"].double(), inputs["conv_bias"].double(),
                                                  padding=d, dilation=d))[0]
        var, mean = torch.var_mean(o, dim=1, correction=0)
        rstd = torch.rsqrt(var + 1e-5)
        q = (o - mean[:, None]) * rstd[:, None]
        v_in = q if inputs["values"] is None else inputs["values"][row, :, start:start + length].double()
        k = inputs["key_weight"].double() @ q + inputs["key_bias"].double()[:, None]
        v = inputs["value_weight"].double() @ v_in + inputs["value_bias"].double()[:, None]
        phi = torch.sigmoid(k).view(heads, c // heads, length)
        stats.append(torch.stack([mean, rstd]))
        kvs.append(torch.einsum("hdt,het->hde", phi, v.view(heads, c // heads, length)))
        ksums.append(phi.sum(-1))
    return torch.stack(stats), torch.stack(kvs), torch.stack(ksums)


@pytest.mark.parametrize("case", ["dec-d2-mask", "enc-rows-dropout", "dec-packed-dropout"])
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_saved_statistics_and_states(ops, backend, case):
    """The raw op's norm_stats = [mean, rstd], kv_state = KV and key_sum (without eps), in the state dtype: float64
    for float64 inputs, float32 (fp32 accuracy) for float32 and float16 inputs."""
    inputs = case_inputs(CASES[case], device=BACKEND_DEVICE[backend])
    expected = _expected_states(inputs)
    for dtype, state, tol in ((torch.float64, torch.float64, 1e-10), (torch.float32, torch.float32, 1e-5),
                              (torch.float16, torch.float32, None)):
        args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and i != 16 else a
                for i, a in enumerate(raw_args(inputs))]
        args[16] = inputs["alpha"].to(state)
        _, *states = ops.att_module(*args)
        for name, got, ref in zip(("norm_stats", "kv_state", "key_sum"), states, expected):
            assert got.dtype == state and got.shape == ref.shape, name
            if tol is not None:
                assert rel_err(got, ref) <= tol, name
            else:  # fp16 inputs: fp32 statistics of the fp16-rounded inputs, not 16-bit ones
                assert torch.isfinite(got).all(), name


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_empty_sequences_and_uncovered_frames(backend):
    CASES_OF_OP.assert_empty_sequences_and_uncovered_frames(
        size(3, 12, c=8, heads=4, dilation=2, mode="decoder", layout="rows", masked=True), backend,
        BACKEND_DEVICE[backend], TOL[torch.float64])


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_dropout_acts_and_follows_the_seed(backend):
    CASES_OF_OP.assert_dropout_follows_the_seed(CASES["enc-rows-dropout"], backend, BACKEND_DEVICE[backend],
                                                {"attention_dropout": 0.0, "dropout": 0.0})


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_bitwise_deterministic(ops, backend):
    args = raw_args(case_inputs(CASES["dec-packed-dropout"], dtype=torch.float32, device=BACKEND_DEVICE[backend]))
    # the backward takes the saved states between the tensors and the scalars
    assert_raw_ops_deterministic(ops.att_module, ops.att_module_backward, args,
                                 lambda outputs: (torch.randn_like(outputs[0]), *args[:18], *outputs[1:], *args[18:]))


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_encoder_backward_returns_an_empty_values_gradient(ops, backend):
    inputs = case_inputs(CASES["enc-d1"], device=BACKEND_DEVICE[backend])
    args = raw_args(inputs)
    out, *states = ops.att_module(*args)
    grads = ops.att_module_backward(torch.randn_like(out), *args[:18], *states, *args[18:])
    assert len(grads) == 15 and grads[1].shape == (0,)
    assert grads[14].shape == () and grads[14].dtype == torch.float64


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, dtypes=(torch.float16, torch.bfloat16)))
def test_16bit_forward_and_grads(backend, dtype):
    CASES_OF_OP.assert_16bit_forward_and_grads(CASES["dec-d2-mask"], backend, BACKEND_DEVICE[backend], dtype)


@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device):
    """Schema, fake-tensor and autograd registration checks of the forward and backward ops, x, values, the 12
    weights and biases and alpha requiring grad."""
    def backward_calls(args):
        out, *states = ops.att_module(*args)
        return [(torch.randn_like(out), *args[:18], *states, *args[18:])]

    args = raw_args(case_inputs(CASES["dec-packed-dropout"], device=device))
    opcheck_raw_ops(ops.att_module, ops.att_module_backward, args, (0, 1, *range(4, 17)), backward_calls, backend,
                    device)


GRADCHECK_SIZE = size(2, 5, c=4, heads=2, dilation=2, mode="decoder", layout="rows", masked=True)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend):
    """Finite differences of the fused op w.r.t. x, values, the dilated conv's weight and alpha (the rest follow
    from the parity tests)."""
    CASES_OF_OP.assert_gradcheck(GRADCHECK_SIZE, backend, ("x", "values", "conv_weight", "alpha"))


class _EncoderLayer(torch.nn.Module):
    """An encoder AttModule called as layer(x, mask) (values None)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, mask):
        return self.layer(x, None, mask)


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
@pytest.mark.parametrize("mode", ["encoder", "decoder"])
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device, mode):
    """torch.compile(fullgraph=True) of an AttModule layer on the fused backend traces the op (fake kernel and
    autograd registration, no graph break) and matches eager, gradients of every parameter and x included."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = AttModule(4, 16, mode, 0.5).to(device).eval()
    layer.backend = backend
    x = torch.randn(2, 16, 37, device=device, requires_grad=True)
    mask = torch.ones(2, 1, 37, device=device)
    mask[1, :, 30:] = 0
    if mode == "decoder":
        values = torch.randn(2, 16, 37, device=device, requires_grad=True)
        assert_compiled_matches_eager(layer, (x, values, mask), 1e-5)
    else:
        assert_compiled_matches_eager(_EncoderLayer(layer), (x, mask), 1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(len(SPEC.parity_sizes["cuda"])), ids=lambda i: f"size{i}")
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_paper_sizes(backend, index):
    """The GPU kernels at TRGNet's size (N = 8, T = 6000, C = 64, dilation 512 and 1, encoder and decoder with
    mask and dropout), C = 256 and a packed batch: float32 output and every gradient against the float64
    reference (``assert_close_to_reference``)."""
    CASES_OF_OP.assert_gpu_paper_size_close_to_reference(backend, index)
