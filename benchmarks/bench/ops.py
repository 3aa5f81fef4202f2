"""One op cell: a benchmark variant of ``trgnet_fast/ops/registry.py`` (``BENCH_VARIANTS``) timed for one
provider, mode and size, with its achieved bandwidth and FLOP rate from the variant's byte and FLOP models."""
from __future__ import annotations

import torch

from trgnet_fast.ops.registry import BENCH_VARIANTS
from trgnet_fast.ops.spec import randn

from .plan import DTYPES, Cell, error_string
from .providers import COMPILED, compile_fn, mark_step
from .timing import L2Flush, device_busy_ms, measure

_PARTS = {"fwd": ("fwd",), "bwd": ("bwd",), "fwd+bwd": ("fwd", "bwd")}


class OpRunner:
    """Builds the callables of one op cell. Compiled functions are kept per (variant, provider) so the
    modes and sizes of a variant share the compile cache (static shapes: one graph per size)."""

    def __init__(self):
        self.compiled: dict[tuple, object] = {}

    def fn(self, name: str, provider: str):
        """fn(**inputs) of variant ``name`` for ``provider``."""
        spec = BENCH_VARIANTS[name][0]
        if provider == "eager":
            return spec.reference
        if provider in COMPILED:
            key = (name, provider)
            if key not in self.compiled:
                self.compiled[key] = compile_fn(spec.reference, provider)
            return self.compiled[key]
        return lambda **inputs: spec.fused(**inputs, backend=provider)

    def run(self, cell: Cell, args, device) -> dict:
        spec, variant = BENCH_VARIANTS[cell.name]
        f = self.fn(cell.name, cell.provider)
        dtype = DTYPES[args.dtype]
        gen = torch.Generator(device=device)
        gen.manual_seed(cell.seed(args.seed))
        inputs = spec.make_inputs(cell.size, dtype, device, gen)
        provider = cell.provider
        flush = L2Flush(device) if (device.type == "cuda" and args.flush_l2) else None
        common = dict(warmup=args.op_warmup, repeat=args.op_repeat, max_s=args.max_cell_s,
                      sync_each=False, flush=flush, cpu_memory=args.cpu_memory)
        if cell.mode == "fwd":
            def step():
                mark_step(provider)
                with torch.no_grad():
                    f(**inputs)
            res = measure(step, device, **common)
        else:
            grad_names = spec.grad_names(inputs)
            leaves = {**inputs, **{k: inputs[k].detach().requires_grad_(True) for k in grad_names}}
            diff = [leaves[k] for k in grad_names]
            with torch.no_grad():
                out_shape = f(**inputs).shape
            grad_out = randn(out_shape, dtype, device, gen)
            if cell.mode == "fwd+bwd":
                def step():
                    mark_step(provider)
                    out = f(**leaves)
                    torch.autograd.grad(out, diff, grad_out)
                res = measure(step, device, **common)
            else:  # bwd: the forward runs untimed before each timed backward
                def fwd():
                    mark_step(provider)
                    return f(**leaves)

                def bwd(out):
                    torch.autograd.grad(out, diff, grad_out)
                res = measure(bwd, device, pre=fwd, **common)
        if device.type == "cuda" and args.device_time_calls > 0:
            timed, pre = (bwd, fwd) if cell.mode == "bwd" else (step, None)
            try:
                res["device_ms"] = device_busy_ms(timed, pre=pre, flush=flush, calls=args.device_time_calls)
            except Exception as exc:  # the profiler must never lose the timings
                res["device_ms_error"] = error_string(exc)
        itemsize = torch.empty((), dtype=dtype).element_size()
        work = op_work(variant, cell.size, cell.mode, itemsize)
        res.update(work)
        if work.get("min_bytes"):
            res["gbps_min_bytes"] = work["min_bytes"] / (res["median_ms"] * 1e-3) / 1e9
            if res.get("device_ms"):
                res["gbps_device"] = work["min_bytes"] / (res["device_ms"] * 1e-3) / 1e9
        if work.get("flops"):
            res["gflops"] = work["flops"] / (res["median_ms"] * 1e-3) / 1e9
        return res


def op_work(variant, size, mode, itemsize) -> dict:
    """{"flops", "min_bytes"} of one call in ``mode`` from the variant's models (absent: no model)."""
    out = {}
    parts = _PARTS[mode]
    if variant.flops:
        fl = variant.flops(size)
        out["flops"] = sum(fl[p] for p in parts)
    if variant.min_bytes:
        by = variant.min_bytes(size, itemsize)
        out["min_bytes"] = sum(by[p] for p in parts)
    return out
