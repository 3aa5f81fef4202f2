"""Tests over every op of the registry (``trgnet_fast.ops.registry.OPS``), each parametrised by op: the backends
an op declares and the model's backend rule, unknown backends, the raw Triton ops each op's ``triton_module``
registers (and the kernels its spec names), and the raw forward ops of every fused backend against the op's
reference on its inputs (``OpSpec.make_inputs``); inputs every backend refuses alike (an empty dimension, float8 or
integers, bfloat16 in Triton's CPU interpreter, meta tensors on Triton) and the fake kernels' device and dtype checks.
The per-op tests are in ``tests/ops/<op>/``; the parity of the public functions over the registry in
tests/test_parity.py."""
from __future__ import annotations

import importlib
import inspect
import re

import pytest
import torch

from op_checks import BACKEND_DEVICE, DEVICE, TOL, fused_backends, needs, raw_ops, rel_err, triton_ops
from trgnet_fast.backend import BACKENDS, backend_status, implemented_backends, model_backend
from trgnet_fast.ops.registry import OPS

SPECS = pytest.mark.parametrize("spec", list(OPS.values()), ids=list(OPS))
SPEC_BACKENDS = [pytest.param(spec, *p.values, id=f"{name}-{p.id}", marks=p.marks)
                 for name, spec in OPS.items() for p in fused_backends(spec)]


def _inputs(spec, device, dtype=torch.float64):
    """The op's keyword inputs at its first CPU parity size (``OpSpec.make_inputs``), float64, fixed seed."""
    return spec.make_inputs(spec.parity_sizes["cpu"][0], dtype, device, torch.Generator().manual_seed(0))


def _raw_args(spec, op, inputs):
    """``inputs`` in the raw op's schema order, the public function's defaults (e.g. eps) filling the rest."""
    params = inspect.signature(spec.fused).parameters
    values = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
    values.update(inputs)
    return [values[arg.name] for arg in op.default._schema.arguments]


@SPECS
def test_backend_registration(spec):
    """The op's module declares its spec's backends (both fused backends today); a model-wide backend follows
    ``model_backend``'s rule on CPU."""
    implemented = implemented_backends(spec.name)
    assert implemented == set(spec.implemented) and set(spec.implemented) <= set(BACKENDS)
    assert {"cuda", "triton"} <= implemented
    # an explicit model-wide "cuda" runs the native op (its C++ kernels on CPU tensors) when the extension is
    # usable, and raises saying why when it is not
    if backend_status("cpu")["cuda"][0]:
        assert model_backend(spec.name, "cuda", "cpu") == "cuda"
    else:
        with pytest.raises(RuntimeError, match="not usable"):
            model_backend(spec.name, "cuda", "cpu")
    assert model_backend(spec.name, "torch", "cpu") == "torch"
    assert model_backend(spec.name, "auto", "cpu") == "torch"


@SPECS
def test_unknown_backend_is_rejected(spec):
    with pytest.raises(ValueError, match="backend"):
        spec.fused(**_inputs(spec, "cpu"), backend="nope")


@needs("triton", DEVICE)
@SPECS
def test_triton_module_registers_the_ops(spec):
    """Importing ``OpSpec.triton_module`` registers ``trgnet_triton::<op>`` and ``..._backward``; it defines the
    kernels ``OpSpec.triton_kernels`` and its benchmark variants' ``triton_kernels`` name."""
    module = importlib.import_module(spec.triton_module)
    for name in (spec.name, f"{spec.name}_backward"):
        assert hasattr(triton_ops(), name), name
    for kernel in {*spec.triton_kernels, *(k for v in spec.bench for k in v.triton_kernels or ())}:
        assert hasattr(module, kernel), kernel


@pytest.mark.parametrize("spec, backend", SPEC_BACKENDS)
def test_raw_forward_op_matches_reference(spec, backend):
    """The raw forward op of each fused backend (``torch.ops.trgnet`` / ``torch.ops.trgnet_triton``) on the op's
    float64 inputs matches the op's reference."""
    inputs = _inputs(spec, BACKEND_DEVICE[backend])
    op = getattr(raw_ops(backend), spec.name)
    out = op(*_raw_args(spec, op, inputs))
    out = out[0] if isinstance(out, tuple) else out
    assert rel_err(out, spec.reference(**inputs)) <= TOL[torch.float64]


@needs("triton", DEVICE)
@SPECS
def test_raw_triton_op_rejects_an_unsupported_dtype(spec):
    """Every floating input in float8: the raw Triton forward op names the op and its first argument."""
    inputs = {name: t.to(torch.float8_e5m2) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
              for name, t in _inputs(spec, DEVICE).items()}
    op = getattr(triton_ops(), spec.name)
    first = op.default._schema.arguments[0].name
    message = re.escape(f"trgnet_triton::{spec.name}: {first}: expected dtype float32, float64, float16 or bfloat16")
    with pytest.raises(ValueError, match=message):
        op(*_raw_args(spec, op, inputs))


# ----------------------------------------------------------------------------------------------
# inputs refused alike by every backend of the public function, and by the fake kernels of the raw native ops

SPEC_ALL_BACKENDS = [pytest.param(spec, "torch", id=f"{name}-torch") for name, spec in OPS.items()] + SPEC_BACKENDS

# the public function's tensors whose every dimension must be >= 1, with their layouts (the message's names)
NONEMPTY = {
    "linear_attention": (("q", "(N, T, H, D)"), ("v", "(N, T, H, E)")),
    "multiscale_graph_conv": (("x", "(N, C, T, V)"),),
    "adaptive_graph_conv": (("x", "(N, C, T, V)"),),
    "batch_norm_relu": (("x", "(N, C, T, V)"),),
    "att_module": (("x", "(B, C, T)"),),
    "dilated_residual": (("x", "(B, C, T)"),),
    "spatial_feature_injection": (("group", "(N, G, T, V)"), ("h", "(N, C, T)")),
    "frame_losses": (("logits", "(S, N, K, T)"), ("boundary_logits", "(R, N, T)")),
    "aris_losses": (("features", "(N, D, T)"), ("segment_count", "(M,)"), ("unit_embeddings", "(K, D)")),
}


def _public_inputs(spec, backend, dtype=torch.float64):
    return _inputs(spec, BACKEND_DEVICE.get(backend, "cpu"), dtype)


def _first_argument(spec) -> str:
    return next(iter(inspect.signature(spec.fused).parameters))


def test_nonempty_table_covers_every_op():
    assert set(NONEMPTY) == set(OPS)


@pytest.mark.parametrize("spec, backend", SPEC_ALL_BACKENDS)
def test_public_function_refuses_an_empty_dimension(spec, backend):
    """A zero-size dimension (N = 0, T = 0, no channel, an empty head) gave NaN (torch), zeros (triton), an
    error (cuda) or an obscure error: now the same ValueError naming the argument and the dimension everywhere."""
    inputs = _public_inputs(spec, backend)
    for name, layout in NONEMPTY[spec.name]:
        for dim_index, dim in enumerate(layout.strip("(,)").split(", ")):
            empty = inputs | {name: inputs[name].narrow(dim_index, 0, 0)}
            message = re.escape(f"{spec.name}: {name}: expected {dim} >= 1 (no empty dimension of {layout}), got shape")
            with pytest.raises(ValueError, match=message):
                spec.fused(**empty, backend=backend)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.int32])
@pytest.mark.parametrize("spec, backend", SPEC_ALL_BACKENDS)
def test_public_function_refuses_float8_and_integer_inputs(spec, backend, dtype):
    """Every floating input in float8 or int32: the torch backend failed inside ATen ("not implemented for
    'Float8_e4m3fn'"); every backend now names the first argument and the dtype."""
    inputs = {name: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
              for name, t in _public_inputs(spec, backend).items()}
    expected = "a floating dtype" if dtype == torch.int32 else "dtype float32, float64, float16 or bfloat16"
    message = re.escape(f"{spec.name}: {_first_argument(spec)}: expected {expected}, got {dtype}")
    with pytest.raises(ValueError, match=message):
        spec.fused(**inputs, backend=backend)


@needs("triton", "cpu")
@SPECS
def test_triton_refuses_bfloat16_on_the_cpu_interpreter(spec):
    """The interpreter computes bfloat16 wrongly (finite garbage): the Triton op itself refuses it, not only the
    model's layers."""
    inputs = _inputs(spec, "cpu", torch.bfloat16)
    with pytest.raises(ValueError, match=re.escape(f"trgnet_triton::{spec.name}: {_first_argument(spec)}: backend "
                                                   "'triton' on CPU (Triton's interpreter) cannot run bfloat16")):
        spec.fused(**inputs, backend="triton")


@needs("triton", DEVICE)
@SPECS
def test_triton_refuses_meta_tensors(spec):
    inputs = {name: t.to("meta") if isinstance(t, torch.Tensor) else t for name, t in _inputs(spec, "cpu").items()}
    with pytest.raises(ValueError, match=re.escape(f"{_first_argument(spec)}: triton cannot run on device meta")):
        spec.fused(**inputs, backend="triton")


def _native_call(spec, native):
    """The raw native forward op, its positional arguments on the op's float64 CPU inputs, their names and the
    positions of the tensors among them."""
    op = getattr(native, spec.name)
    args = _raw_args(spec, op, _inputs(spec, "cpu"))
    names = [argument.name for argument in op.default._schema.arguments]
    return op, args, names, [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]


@SPECS
def test_raw_native_op_refuses_mixed_devices_in_its_fake_kernel(spec, native):
    """One input on ``meta``, the others on the CPU: the call lands in the fake kernel, which returned
    uninitialised memory; it now names the argument and both devices."""
    op, args, names, tensors = _native_call(spec, native)
    args[tensors[1]] = args[tensors[1]].to("meta")
    message = re.escape(f"trgnet::{spec.name}: {names[tensors[1]]}: expected device cpu (same as {names[0]}), got meta")
    with pytest.raises(ValueError, match=message):
        op(*args)


@SPECS
def test_raw_native_op_fake_kernel_checks_dtypes(spec, native):
    """All inputs on ``meta`` (the fake kernel), one floating input in float32 among float64 ones: refused with
    the public function's message, not an output of a guessed dtype."""
    op, args, _, tensors = _native_call(spec, native)
    args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    second_float = [i for i in tensors if args[i].is_floating_point()][1]
    args[second_float] = args[second_float].float()
    with pytest.raises(ValueError, match=rf"trgnet::{spec.name}: \w+: expected dtype torch.float\d\d"):
        op(*args)


SEQUENCE_OPS = [p for p in SPEC_ALL_BACKENDS if "cu_seqlens" in inspect.signature(p.values[0].fused).parameters]


@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
@pytest.mark.parametrize("spec, backend", SEQUENCE_OPS)
def test_frames_outside_every_sequence_take_no_part(spec, backend, fill):
    """Padded rows (cu_seqlens): NaN / inf past a row's length change no output and no gradient, and leave every
    gradient finite, on every backend."""
    s = spec.parity_sizes["cpu"][1] | {"T": 9, "C": 4, "dilation": 2, "masked": False, "dropout": False,
                                       "min_length": 1}
    inputs = spec.make_inputs(s, torch.float64, BACKEND_DEVICE.get(backend, "cpu"), torch.Generator().manual_seed(0))
    cu = inputs["cu_seqlens"]
    outside = torch.arange(s["T"], device=cu.device)[None, None, :] >= (cu[1:] - cu[:-1])[:, None, None]
    assert outside.any()
    results = []
    for value in (0.0, fill):
        leaves = {name: t.masked_fill(outside, value) if name in ("x", "values") and t is not None else t
                  for name, t in inputs.items()}
        for name in spec.grad_names(leaves):
            leaves[name] = leaves[name].detach().requires_grad_(True)
        out = spec.fused(**leaves, backend=backend)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out))
        results.append((out.detach(), {name: leaves[name].grad for name in spec.grad_names(leaves)}))
    (out_zero, grads_zero), (out_fill, grads_fill) = results
    assert torch.equal(out_fill, out_zero)
    for name, grad in grads_fill.items():
        assert torch.isfinite(grad).all() and torch.equal(grad, grads_zero[name]), name
