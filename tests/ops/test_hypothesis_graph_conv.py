"""Property-based parity tests (hypothesis) of the fused graph convolutions:
``multiscale_graph_conv`` (issue 5, op 1) and ``adaptive_graph_conv`` (issue 5/6, op 2).

Hypothesis draws the shapes (N 1-3, C 1-6, T 1-13, V in {17, 19, 25} or a small random V; S 1-3 and
C_out 1-9 for the multi-scale op), the dtype (float64, float32), whether x is a non-contiguous view
(the model's (V, T) swap: ``randn(N, C, V, T).transpose(2, 3)``) and the seed of the input values. For
every fused backend that really runs the op here (``triton``: CUDA, or the CPU interpreter with
``TRITON_INTERPRET=1`` from tests/conftest.py; ``cuda``: the native extension, its C++ kernels on CPU
tensors), the forward and the gradients of every input are compared with the float64 reference of the
op module. A backend that cannot run the op is skipped with the reason: not declared by the op
(``implemented_backends``) or not usable on this device (``backend_status``).

Tolerances (design.md §5 and the op tests' convention): ||out - ref|| / ||ref|| against the float64
reference: fp64 <= 1e-10, fp32 <= 1e-5. For the gradients that are reductions down to a handful of
numbers (dbeta; the conv bias and weight gradients, which are scalars when C_out = S = C = 1) the
denominator is at least the L2 norm of the summands, the typical size of a sum of that many
random-sign terms: a chance cancellation of the exact sum must not turn rounding into a failure.

The interpreter is slow (~ms per program): shapes are tiny, few examples.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from op_checks import rel_err
from op_checks import run_with_grads as grads_of
from trgnet_fast.backend import backend_status, implemented_backends
from trgnet_fast.ops import adaptive_graph_conv as agc_mod
from trgnet_fast.ops import multiscale_graph_conv as msgc_mod

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED = ("triton", "cuda")
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


# ----------------------------------------------------------------------------------------------
# which backends really run an op here

def unavailable(op: str, backend: str) -> str | None:
    """Why ``backend`` cannot run ``op`` on DEVICE now (None: it can)."""
    if backend not in implemented_backends(op):
        return f"{backend} does not implement {op} (implemented: {sorted(implemented_backends(op))})"
    ok, why = backend_status(DEVICE)[backend]
    if not ok:
        return f"{backend} backend not usable on {DEVICE}: {why}"
    return None


def _backend_fixture(op: str):
    @pytest.fixture(scope="module", params=FUSED)
    def fixture(request):
        why = unavailable(op, request.param)
        if why:
            print(f"skip {op} [{request.param}]: {why}")
            pytest.skip(why)
        return request.param
    return fixture


msgc_backend = _backend_fixture(msgc_mod.OP_NAME)
agc_backend = _backend_fixture(agc_mod.OP_NAME)


# ----------------------------------------------------------------------------------------------
# helpers

def check(name_grads, out, ref_out, grads, ref_grads, inputs, dtype, floors):
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert torch.isfinite(out).all()
    errs = {"out": rel_err(out, ref_out)}
    for name, g, r, t in zip(name_grads, grads, ref_grads, inputs):
        assert g.dtype == dtype and g.shape == t.shape, name
        assert torch.isfinite(g).all(), name
        errs[name] = rel_err(g, r, floors.get(name, 0.0))
    bad = {k: e for k, e in errs.items() if not e <= TOL[dtype]}
    assert not bad, (bad, errs)


def joints():
    return st.one_of(st.sampled_from([17, 19, 25]), st.integers(1, 8))


def draw_x(gen, n, c, t, v, contiguous):
    if contiguous:
        return torch.randn(n, c, t, v, generator=gen, dtype=torch.float64)
    x = torch.randn(n, c, v, t, generator=gen, dtype=torch.float64).transpose(2, 3)  # the model's swap
    assert not x.is_contiguous() or min(v, t) == 1
    return x


COMMON = dict(N=st.integers(1, 3), C=st.integers(1, 6), T=st.integers(1, 13), V=joints(),
              dtype=st.sampled_from([torch.float64, torch.float32]), contiguous=st.booleans(),
              seed=st.integers(0, 2 ** 32 - 1))


# ----------------------------------------------------------------------------------------------
# multiscale_graph_conv

@settings(max_examples=20, deadline=None)
@given(S=st.integers(1, 3), O=st.integers(1, 9), **COMMON)
def test_multiscale_graph_conv_property(msgc_backend, N, C, T, V, S, O, dtype, contiguous, seed):
    gen = torch.Generator().manual_seed(seed)
    x = draw_x(gen, N, C, T, V, contiguous)
    a = torch.randn(S * V, V, generator=gen, dtype=torch.float64) / V ** 0.5
    w = torch.randn(O, S * C, generator=gen, dtype=torch.float64) / (S * C) ** 0.5
    b = torch.randn(O, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(N, O, T, V, generator=gen, dtype=torch.float64)
    inputs64 = [x, a, w, b]
    inputs = [t.to(device=DEVICE, dtype=dtype) for t in inputs64]
    assert inputs[0].is_contiguous() == x.is_contiguous()

    ref_out, ref_grads = grads_of(msgc_mod.multiscale_graph_conv_reference, inputs64, grad_out)
    out, grads = grads_of(lambda *a_: msgc_mod.multiscale_graph_conv(*a_, backend=msgc_backend),
                          inputs, grad_out.to(DEVICE))
    # summand norms of the reductions dW[o, k] = sum_ntv dY Z and db[o] = sum_ntv dY
    z = torch.einsum("su,nctu->ncts", a, x).reshape(N, C, T, S, V).permute(0, 3, 1, 2, 4)
    z = z.reshape(N, S * C, T, V)
    floors = {"weight": torch.einsum("notv,nktv->ok", grad_out ** 2, z ** 2).sum().sqrt().item(),
              "bias": grad_out.norm().item()}
    check(("x", "adjacency", "weight", "bias"), out.cpu(), ref_out, [g.cpu() for g in grads], ref_grads,
          inputs64, dtype, floors)


# ----------------------------------------------------------------------------------------------
# adaptive_graph_conv

@settings(max_examples=20, deadline=None)
@given(scalar_beta=st.booleans(), **COMMON)
def test_adaptive_graph_conv_property(agc_backend, N, C, T, V, dtype, contiguous, seed, scalar_beta):
    gen = torch.Generator().manual_seed(seed)
    x = draw_x(gen, N, C, T, V, contiguous)
    p = torch.randn(N, T, V, generator=gen, dtype=torch.float64)
    q = torch.randn(N, T, V, generator=gen, dtype=torch.float64)
    beta = torch.randn((() if scalar_beta else (1,)), generator=gen, dtype=torch.float64)
    g = torch.randn(N, C, V, V, generator=gen, dtype=torch.float64) / V ** 0.5
    j = torch.randn(V, V, generator=gen, dtype=torch.float64).abs() / V ** 0.5
    grad_out = torch.randn(N, C, T, V, generator=gen, dtype=torch.float64)
    inputs64 = [x, p, q, beta, g, j]
    inputs = [t.to(device=DEVICE, dtype=dtype) for t in inputs64]

    ref_out, ref_grads = grads_of(agc_mod.adaptive_graph_conv_reference, inputs64, grad_out)
    out, grads = grads_of(lambda *a_: agc_mod.adaptive_graph_conv(*a_, backend=agc_backend),
                          inputs, grad_out.to(DEVICE))
    floors = agc_mod.gradient_error_floors(grad_out, *inputs64)
    check(("x", "p", "q", "beta", "channel_graph", "joint_graph"), out.cpu(), ref_out,
          [t.cpu() for t in grads], ref_grads, inputs64, dtype, floors)
