"""Property-based parity tests (hypothesis) of the fused ``multiscale_graph_conv``.

Hypothesis draws the shapes (N 1-3, C 1-6, T 1-13, V in {17, 19, 25} or a small random V, S 1-3, C_out 1-9), the
memory layout of every input independently (contiguous; transposed storage: x with the model's (V, T) swap,
``randn(N, C, V, T).transpose(2, 3)``, A and W transposed; or a strided slice: the odd elements (storage offset 1,
stride 2) of a buffer twice as long in the last dim, the gaps NaN, for every input incl. b) and the seed of the
input values. For every fused backend of the op's spec (``OpSpec.backends``) that really runs here (``triton``:
CUDA, or the CPU interpreter with ``TRITON_INTERPRET=1`` from tests/conftest.py; ``cuda``: the native extension,
its C++ kernels on CPU tensors, its CUDA kernels on a GPU), the forward and the gradients of every input are
compared with the float64 reference, run on exactly the values the backend sees (inputs and cotangent drawn in
float64, rounded to the dtype, widened back). A backend that cannot run here is skipped with the reason.

Tolerances, as ``hypothesis_cases.check_parity`` judges a draw (||out-ref||/||ref|| against float64,
docs/architecture.md#parity): float64 and float32 (one test) within 1e-10 and 1e-5; float16 and bfloat16 (another
test; bfloat16 not for triton under its CPU interpreter, which cannot run it: skipped with that reason) within 2x
the error of the plain-PyTorch reference run in that dtype on the same inputs and cotangent, never below 1e-5 (the
fused kernels accumulate in fp32: where the 16-bit reference is exact, e.g. a gradient that is a single product or
sum of representable numbers, their fp32 rounding is all that is left). The conv bias and weight gradients,
reductions down to a handful of numbers (scalars when C_out = S = C = 1), are measured against at least the L2 norm
of their summands (``floors``), the typical size of a sum of that many random-sign terms: a chance cancellation of
the exact sum must not turn rounding into a failure (the same floors for the fused error and for the 16-bit
reference's).

The interpreter is slow (~0.1 s per program): shapes are tiny, few examples for triton on CPU, more for the
compiled kernels.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import strategies as st

from hypothesis_cases import GRAPH_CONV_DRAWS, check_drawn_cases, check_parity, examples, layouts
from op_checks import DEVICE, fused_backends
from trgnet_fast.ops.multiscale_graph_conv import OP_NAME, multiscale_graph_conv
from trgnet_fast.ops.multiscale_graph_conv.reference import multiscale_graph_conv_reference
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
DIMS = {"x": (2, 3), "adjacency": (0, 1), "weight": (0, 1), "bias": None}


def values(N, C, T, V, S, O, seed):
    """float64 x, A, W, b and the cotangent from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, T, V, generator=gen, dtype=torch.float64)
    a = torch.randn(S * V, V, generator=gen, dtype=torch.float64) / V ** 0.5
    w = torch.randn(O, S * C, generator=gen, dtype=torch.float64) / (S * C) ** 0.5
    b = torch.randn(O, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(N, O, T, V, generator=gen, dtype=torch.float64)
    return [x, a, w, b], grad_out


def floors(grad_out, x, a, w, b):
    """Summand norms of the reductions dW[o, k] = sum_ntv dY Z and db[o] = sum_ntv dY."""
    n, c, t, v = x.shape
    s = a.shape[0] // v
    z = torch.einsum("su,nctu->ncts", a, x).reshape(n, c, t, s, v).permute(0, 3, 1, 2, 4).reshape(n, s * c, t, v)
    return {"weight": torch.einsum("notv,nktv->ok", grad_out ** 2, z ** 2).sum().sqrt().item(),
            "bias": grad_out.norm().item()}


def check(backend, dtype, N, C, T, V, S, O, seed, drawn_layouts):
    inputs, grad_out = values(N, C, T, V, S, O, seed)
    check_parity(tuple(DIMS), multiscale_graph_conv_reference,
                 lambda *a_: multiscale_graph_conv(*a_, backend=backend),
                 inputs, grad_out, dtype, drawn_layouts, DIMS, floors)


DRAWS = dict(S=st.integers(1, 3), O=st.integers(1, 9), drawn_layouts=layouts(DIMS), **GRAPH_CONV_DRAWS)


@pytest.mark.parametrize("backend", fused_backends(SPEC, device=DEVICE))
def test_multiscale_graph_conv_property(backend):
    """fp64 / fp32: the output and the gradients of x, A, W and b within TOL of the float64 reference."""
    check_drawn_cases(partial(check, backend), examples(backend, 4, 50),
                      dtype=st.sampled_from([torch.float64, torch.float32]), **DRAWS)


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, (torch.float16, torch.bfloat16), device=DEVICE))
def test_multiscale_graph_conv_property_16bit(backend, dtype):
    """fp16 / bf16: the output and the gradients of x, A, W and b within 2x the error of the same-dtype PyTorch
    reference (not below 1e-5)."""
    check_drawn_cases(partial(check, backend, dtype), examples(backend, 4, 50), **DRAWS)
