"""Property-based parity tests (hypothesis) of the fused graph convolutions:
``multiscale_graph_conv`` and ``adaptive_graph_conv``.

Hypothesis draws the shapes (N 1-3, C 1-6, T 1-13, V in {17, 19, 25} or a small random V; S 1-3 and C_out 1-9
for the multi-scale op; beta of shape (1,) or () for the adaptive op), the memory layout of every input
independently (contiguous; transposed storage: x with the model's (V, T) swap, ``randn(N, C, V, T)
.transpose(2, 3)``, p and q (N, V, T) storage, the channel graph (V, V) swapped, A, W and J transposed; or a
strided slice: the odd elements (storage offset 1, stride 2) of a buffer twice as long in the last dim, the
gaps NaN, for every input incl. b and beta) and the seed of the input values. For every fused backend that
really runs the op here (``triton``: CUDA, or the CPU interpreter with ``TRITON_INTERPRET=1`` from
tests/conftest.py; ``cuda``: the native extension, its C++ kernels on CPU tensors), the forward and the
gradients of every input are compared with the float64 reference of the op module, run on exactly the values
the backend sees (inputs and cotangent drawn in float64, rounded to the dtype, widened back). A backend that
cannot run the op is skipped with the reason: not declared by the op (``implemented_backends``) or not usable
on this device (``backend_status``).

Dtypes: float64 and float32 (one test per op); float16 and bfloat16 (another), bfloat16 not for triton under
its CPU interpreter, which cannot run it (skipped with that reason; it runs on a GPU).

Tolerances (||out-ref||/||ref|| against float64, docs/architecture.md#parity; fp64 as in the op tests): fp64 <=
1e-10, fp32 <= 1e-5; float16 and bfloat16: <= 2x the error (against the same float64 reference) of the op
module's plain-PyTorch reference run in that dtype on the same inputs and cotangent, and never below fp32's
1e-5 (the fused kernels accumulate in fp32: where the 16-bit reference is exact, e.g. a gradient that is a
single product or sum of representable numbers, their fp32 rounding is all that is left). For the gradients
that are reductions down to a handful of numbers (dbeta; the conv bias and weight gradients, which are
scalars when C_out = S = C = 1) the denominator is at least the L2 norm of the summands, the typical size of
a sum of that many random-sign terms: a chance cancellation of the exact sum must not turn rounding into a
failure (the same floors for the fused error and for the 16-bit reference's).

The interpreter is slow (~0.1 s per program): shapes are tiny, few examples for triton on CPU, more for the
compiled kernels.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hypothesis_cases import DEVICE, INTERPRETED, NO_BF16, examples, with_layout
from op_checks import rel_err
from op_checks import run_with_grads as reference_grads_of
from trgnet_fast.backend import backend_status, implemented_backends
from trgnet_fast.ops import adaptive_graph_conv as agc_mod
from trgnet_fast.ops import multiscale_graph_conv as msgc_mod

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


def skip_if_no_16bit(op: str, backend: str, dtype: torch.dtype) -> None:
    if backend == "triton" and INTERPRETED and dtype == torch.bfloat16:
        print(f"skip {op} [{backend}, bfloat16]: {NO_BF16}")
        pytest.skip(NO_BF16)


# ----------------------------------------------------------------------------------------------
# layouts: same values, other strides

def layouts(dims_by_input: dict[str, tuple[int, int] | None]):
    """One layout per input: "transposed" only where the input has ``dims`` to swap (not None)."""
    return st.fixed_dictionaries({
        name: st.sampled_from(("contiguous", "strided") if dims is None else ("contiguous", "transposed", "strided"))
        for name, dims in dims_by_input.items()})


MSGC_DIMS = {"x": (2, 3), "adjacency": (0, 1), "weight": (0, 1), "bias": None}
AGC_DIMS = {"x": (2, 3), "p": (1, 2), "q": (1, 2), "beta": None, "channel_graph": (2, 3), "joint_graph": (0, 1)}


# ----------------------------------------------------------------------------------------------
# helpers

def joints():
    return st.one_of(st.sampled_from([17, 19, 25]), st.integers(1, 8))


COMMON = dict(N=st.integers(1, 3), C=st.integers(1, 6), T=st.integers(1, 13), V=joints(),
              seed=st.integers(0, 2 ** 32 - 1))


def fused_grads(fn, inputs, grad_out):
    """(out, grads) of ``fn(*inputs)``, the inputs kept in their layouts (``detach`` is a view)."""
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    return out.detach(), torch.autograd.grad(out, leaves, grad_out)


def check_parity(names, reference, fused, values, grad_out64, dtype, drawn_layouts, dims, floors_of):
    """``fused`` vs the float64 ``reference`` on ``values`` (float64, contiguous) rounded to ``dtype`` and
    put in ``drawn_layouts``: output and gradients finite, in that dtype and shape, each error within TOL
    (fp64, fp32) or within 2x the same error of ``reference`` run in ``dtype`` and not below 1e-5 (16 bits).
    ``floors_of(grad_out64, *inputs64) -> {name: floor}`` (denominator floors of reduction gradients)."""
    lowp = [t.to(device=DEVICE, dtype=dtype) for t in values]
    grad_out = grad_out64.to(device=DEVICE, dtype=dtype)
    inputs64 = [t.double().cpu() for t in lowp]  # exactly what the runs see
    grad64 = grad_out.double().cpu()
    inputs = [with_layout(t, drawn_layouts[name], dims[name]) for name, t in zip(names, lowp)]

    ref_out, ref_grads = reference_grads_of(reference, inputs64, grad64)
    out, grads = fused_grads(fused, inputs, grad_out)
    floors = floors_of(grad64, *inputs64)
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert torch.isfinite(out).all()
    errs = {"out": rel_err(out.cpu(), ref_out)}
    for name, g, r, t in zip(names, grads, ref_grads, inputs):
        assert g.dtype == dtype and g.shape == t.shape, name
        assert torch.isfinite(g).all(), name
        errs[name] = rel_err(g.cpu(), r, floors.get(name, 0.0))
    if dtype in TOL:
        errs = {k: (e, TOL[dtype]) for k, e in errs.items()}
    else:  # the same errors of the reference run in `dtype`
        low_out, low_grads = reference_grads_of(reference, lowp, grad_out)
        low = {"out": rel_err(low_out.cpu(), ref_out)}
        low.update({name: rel_err(g.cpu(), r, floors.get(name, 0.0))
                    for name, g, r in zip(names, low_grads, ref_grads)})
        errs = {k: (e, max(2 * low[k], TOL[torch.float32])) for k, e in errs.items()}
    bad = {k: e for k, e in errs.items() if not e[0] <= e[1]}
    assert not bad, ("(error, bound)", bad, errs)


# ----------------------------------------------------------------------------------------------
# multiscale_graph_conv

def msgc_values(N, C, T, V, S, O, seed):
    """float64 x, A, W, b and the cotangent from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, T, V, generator=gen, dtype=torch.float64)
    a = torch.randn(S * V, V, generator=gen, dtype=torch.float64) / V ** 0.5
    w = torch.randn(O, S * C, generator=gen, dtype=torch.float64) / (S * C) ** 0.5
    b = torch.randn(O, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(N, O, T, V, generator=gen, dtype=torch.float64)
    return [x, a, w, b], grad_out


def msgc_floors(grad_out, x, a, w, b):
    """Summand norms of the reductions dW[o, k] = sum_ntv dY Z and db[o] = sum_ntv dY."""
    n, c, t, v = x.shape
    s = a.shape[0] // v
    z = torch.einsum("su,nctu->ncts", a, x).reshape(n, c, t, s, v).permute(0, 3, 1, 2, 4).reshape(n, s * c, t, v)
    return {"weight": torch.einsum("notv,nktv->ok", grad_out ** 2, z ** 2).sum().sqrt().item(),
            "bias": grad_out.norm().item()}


def check_msgc(backend, dtype, N, C, T, V, S, O, seed, drawn_layouts):
    values, grad_out = msgc_values(N, C, T, V, S, O, seed)
    check_parity(tuple(MSGC_DIMS), msgc_mod.multiscale_graph_conv_reference,
                 lambda *a_: msgc_mod.multiscale_graph_conv(*a_, backend=backend),
                 values, grad_out, dtype, drawn_layouts, MSGC_DIMS, msgc_floors)


MSGC_DRAWS = dict(S=st.integers(1, 3), O=st.integers(1, 9), drawn_layouts=layouts(MSGC_DIMS), **COMMON)


def test_multiscale_graph_conv_property(msgc_backend):
    """fp64 / fp32: within TOL of the float64 reference."""
    @settings(max_examples=examples(msgc_backend, 4, 50), deadline=None)
    @given(dtype=st.sampled_from([torch.float64, torch.float32]), **MSGC_DRAWS)
    def case(dtype, **draws):
        check_msgc(msgc_backend, dtype, **draws)
    case()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_multiscale_graph_conv_property_16bit(msgc_backend, dtype):
    """fp16 / bf16: within 2x the error of the same-dtype PyTorch reference (not below 1e-5)."""
    skip_if_no_16bit(msgc_mod.OP_NAME, msgc_backend, dtype)

    @settings(max_examples=examples(msgc_backend, 4, 50), deadline=None)
    @given(**MSGC_DRAWS)
    def case(**draws):
        check_msgc(msgc_backend, dtype, **draws)
    case()


# ----------------------------------------------------------------------------------------------
# adaptive_graph_conv

def agc_values(N, C, T, V, scalar_beta, seed):
    """float64 x, p, q, beta, G, J and the cotangent from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, T, V, generator=gen, dtype=torch.float64)
    p = torch.randn(N, T, V, generator=gen, dtype=torch.float64)
    q = torch.randn(N, T, V, generator=gen, dtype=torch.float64)
    beta = torch.randn((() if scalar_beta else (1,)), generator=gen, dtype=torch.float64)
    g = torch.randn(N, C, V, V, generator=gen, dtype=torch.float64) / V ** 0.5
    j = torch.randn(V, V, generator=gen, dtype=torch.float64).abs() / V ** 0.5
    grad_out = torch.randn(N, C, T, V, generator=gen, dtype=torch.float64)
    return [x, p, q, beta, g, j], grad_out


def check_agc(backend, dtype, N, C, T, V, scalar_beta, seed, drawn_layouts):
    values, grad_out = agc_values(N, C, T, V, scalar_beta, seed)
    check_parity(tuple(AGC_DIMS), agc_mod.adaptive_graph_conv_reference,
                 lambda *a_: agc_mod.adaptive_graph_conv(*a_, backend=backend),
                 values, grad_out, dtype, drawn_layouts, AGC_DIMS, agc_mod.gradient_error_floors)


AGC_DRAWS = dict(scalar_beta=st.booleans(), drawn_layouts=layouts(AGC_DIMS), **COMMON)


def test_adaptive_graph_conv_property(agc_backend):
    """fp64 / fp32: within TOL of the float64 reference."""
    @settings(max_examples=examples(agc_backend, 6, 50), deadline=None)
    @given(dtype=st.sampled_from([torch.float64, torch.float32]), **AGC_DRAWS)
    def case(dtype, **draws):
        check_agc(agc_backend, dtype, **draws)
    case()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_adaptive_graph_conv_property_16bit(agc_backend, dtype):
    """fp16 / bf16: within 2x the error of the same-dtype PyTorch reference (not below 1e-5)."""
    skip_if_no_16bit(agc_mod.OP_NAME, agc_backend, dtype)

    @settings(max_examples=examples(agc_backend, 5, 50), deadline=None)
    @given(**AGC_DRAWS)
    def case(**draws):
        check_agc(agc_backend, dtype, **draws)
    case()
