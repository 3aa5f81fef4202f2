"""What a provider makes of a function: ``compile`` and ``compile-ro`` (torch.compile, static shapes),
the CUDA-graph step marker, and the dynamo counters and cache resets around a compiled cell
(benchmarks/README.md#providers)."""
from __future__ import annotations

import gc

import torch

COMPILED = ("compile", "compile-ro")


def set_recompile_limit(n):
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), n))


def compile_fn(fn, provider):
    if provider == "compile":
        return torch.compile(fn, dynamic=False)
    return torch.compile(fn, mode="reduce-overhead", dynamic=False)


def mark_step(provider):
    if provider == "compile-ro":
        torch.compiler.cudagraph_mark_step_begin()


def _counters():
    from torch._dynamo.utils import counters
    return counters


def clear_counters():
    _counters().clear()


def compile_counters() -> dict:
    """Graph breaks, graphs and CUDA-graph skips of the cell (a compile-ro cell that skipped CUDA graphs
    runs like compile)."""
    c = _counters()
    return {"graph_breaks": sum(c["graph_break"].values()),
            "graph_break_reasons": sorted(c["graph_break"])[:10],
            "unique_graphs": c["stats"].get("unique_graphs", 0),
            "cudagraph_skips": c["inductor"].get("cudagraph_skips", 0)}


def cleanup(device, compiled: bool):
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
