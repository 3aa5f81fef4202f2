"""pytest-benchmark CPU micro-benchmarks: each fused op (reference vs available backends) and a small
TRGNet forward. Not part of the test suite; run explicitly:

    pytest benchmarks/ --benchmark-only
    pytest benchmarks/ --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,min,rounds

Timings are never asserted. Backends that are not implemented for an op or not usable on this machine
are skipped with the reason.
"""
from __future__ import annotations

import pytest
import torch

import bench_registry as reg

DEVICE = torch.device("cpu")
SMALL = {"N": 2, "T": 256}          # op size (H, D, E from the op's registry entry)
MODEL = {"N": 1, "T": 128}          # model eval size
MODEL_TRAIN = {"N": 2, "T": 64}     # model train-mode forward size
PROVIDERS = ("reference", "torch", "triton", "cuda")


def _op_fn(spec: reg.BenchOp, provider: str):
    from trgnet_fast.backend import backend_status, implemented_backends
    ref, fused = spec.load()
    if provider == "reference":
        return ref
    if provider not in implemented_backends(spec.op_name):
        pytest.skip(f"{provider} does not implement {spec.op_name}")
    ok, why = backend_status(DEVICE)[provider]
    if not ok:
        pytest.skip(f"{provider} not usable on cpu: {why}")
    return lambda *a, **kw: fused(*a, backend=provider, **kw)


def _inputs(spec: reg.BenchOp, mode: str):
    gen = torch.Generator().manual_seed(1234)
    size = spec.sizes(SMALL["N"], SMALL["T"])
    args, kwargs = spec.make_inputs(size, torch.float32, DEVICE, gen)
    if mode == "fwd+bwd":
        args = tuple(a.requires_grad_(True) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    return args, kwargs


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ("fwd", "fwd+bwd"))
@pytest.mark.parametrize("op", list(reg.OPS))
def test_op(benchmark, op, mode, provider):
    spec = reg.OPS[op]
    fn = _op_fn(spec, provider)
    args, kwargs = _inputs(spec, mode)
    benchmark.group = f"{op} {mode} N={SMALL['N']} T={SMALL['T']}"
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(*args, **kwargs)
    else:
        diff = reg.grad_inputs(args)
        with torch.no_grad():
            grad_out = torch.randn(fn(*args, **kwargs).shape, generator=torch.Generator().manual_seed(7))

        def run():
            return torch.autograd.grad(fn(*args, **kwargs), diff, grad_out)
    benchmark(run)


def _model():
    try:
        return reg.build_model(DEVICE, "torch", seed=0)
    except ImportError as exc:
        pytest.skip(f"TRGNet not importable: {exc}")


@pytest.mark.parametrize("mode", ("eval", "train"))
def test_model_forward(benchmark, mode):
    model = _model()
    size = MODEL if mode == "eval" else MODEL_TRAIN
    data = reg.make_model_inputs(size["N"], size["T"], DEVICE, seed=5, padded=mode == "train")
    model.train(mode == "train")
    benchmark.group = f"TRGNet forward ({mode}) N={size['N']} T={size['T']}"

    def run():
        with torch.no_grad():
            return model(data["x"], data["mask"], data["joint_graph"])
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
