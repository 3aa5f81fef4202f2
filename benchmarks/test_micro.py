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

import workload

from trgnet_fast.ops.registry import BENCH_VARIANTS

DEVICE = torch.device("cpu")
SMALL = {"N": 2, "T": 256}          # op size (H, D, E from the variant's sizes in the op registry)
MODEL = {"N": 1, "T": 128}          # model eval size
MODEL_TRAIN = {"N": 2, "T": 64}     # model train-mode forward size
PROVIDERS = ("reference", "torch", "triton", "cuda")


def _op_fn(spec, provider: str):
    from trgnet_fast.backend import backend_status
    if provider == "reference":
        return spec.reference
    if provider not in spec.implemented:
        pytest.skip(f"{provider} does not implement {spec.name}")
    ok, why = backend_status(DEVICE)[provider]
    if not ok:
        pytest.skip(f"{provider} not usable on cpu: {why}")
    return lambda **inputs: spec.fused(**inputs, backend=provider)


def _inputs(spec, variant, mode: str) -> dict:
    gen = torch.Generator().manual_seed(1234)
    inputs = spec.make_inputs(variant.sizes(SMALL["N"], SMALL["T"]), torch.float32, DEVICE, gen)
    if mode == "fwd+bwd":
        for name in spec.grad_names(inputs):
            inputs[name].requires_grad_(True)
    return inputs


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ("fwd", "fwd+bwd"))
@pytest.mark.parametrize("op", list(BENCH_VARIANTS))
def test_op(benchmark, op, mode, provider):
    spec, variant = BENCH_VARIANTS[op]
    fn = _op_fn(spec, provider)
    inputs = _inputs(spec, variant, mode)
    benchmark.group = f"{op} {mode} N={SMALL['N']} T={SMALL['T']}"
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(**inputs)
    else:
        diff = [inputs[name] for name in spec.grad_names(inputs)]
        with torch.no_grad():
            grad_out = torch.randn(fn(**inputs).shape, generator=torch.Generator().manual_seed(7))

        def run():
            return torch.autograd.grad(fn(**inputs), diff, grad_out)
    benchmark(run)


def _model():
    try:
        return workload.build_model(DEVICE, "torch", seed=0)
    except ImportError as exc:
        pytest.skip(f"TRGNet not importable: {exc}")


@pytest.mark.parametrize("mode", ("eval", "train"))
def test_model_forward(benchmark, mode):
    model = _model()
    size = MODEL if mode == "eval" else MODEL_TRAIN
    data = workload.make_model_inputs(size["N"], size["T"], DEVICE, seed=5, padded=mode == "train")
    model.train(mode == "train")
    benchmark.group = f"TRGNet forward ({mode}) N={size['N']} T={size['T']}"

    def run():
        with torch.no_grad():
            return model(data["x"], data["mask"], data["joint_graph"])
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
