"""Tests over every op of the registry (``trgnet_fast.ops.registry.OPS``), each parametrised by op: the backends
an op declares and the model's backend rule, unknown backends, the raw Triton ops each op's ``triton_module``
registers (and the kernels its spec names), and the raw forward ops of every fused backend against the op's
reference on its inputs (``OpSpec.make_inputs``). The per-op tests are in ``tests/ops/<op>/``; the parity of the
public functions over the registry in tests/test_parity.py."""
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
    kernels ``OpSpec.triton_kernels`` names."""
    module = importlib.import_module(spec.triton_module)
    for name in (spec.name, f"{spec.name}_backward"):
        assert hasattr(triton_ops(), name), name
    for kernel in spec.triton_kernels:
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
