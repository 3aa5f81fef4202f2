"""The cells of a run: what (the model or an op variant of ``trgnet_fast/ops/registry.py``) x mode x provider x
size, in the order they run, each with the reason it is skipped when it cannot run here
(benchmarks/README.md#providers)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch

from trgnet_fast.ops.registry import BENCH_VARIANTS, OPS

PROVIDERS = ("eager", "compile", "compile-ro", "triton", "cuda")
OP_MODES = ("fwd", "bwd", "fwd+bwd")
MODEL_MODES = ("train", "infer")
PRESETS = {
    # model train batch, op batch, T list
    "cpu": {"batch": 2, "op_batch": 8, "T": [128, 512], "op_T": [1500, 6000]},
    "paper": {"batch": 8, "op_batch": 8, "T": [1500, 3000, 6000, 12000], "op_T": [1500, 3000, 6000, 12000]},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# priority classes: cheap and essential first, so a time budget drops the expensive tail
PRIORITY = {"op": 0, "model-eager": 1, "model-fused": 2, "op-compile": 3, "model-compile": 4, "model-ro": 5}


@dataclass
class Cell:
    kind: str            # "model" | "op"
    name: str            # "trgnet" | a BENCH_VARIANTS name
    mode: str            # train | infer | fwd | bwd | fwd+bwd
    provider: str
    size: dict
    priority: int = 0
    skip: str | None = None
    result: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        size = ",".join(f"{k}={v}" for k, v in self.size.items())
        return f"{self.kind}:{self.name}:{self.mode}:{self.provider}:{size}"

    def seed(self, base: int) -> int:
        # same inputs for every provider of one (what, mode, size): the seed ignores the provider
        size = ",".join(f"{k}={v}" for k, v in self.size.items())
        return (base * 1_000_003 + zlib.crc32(f"{self.kind}:{self.name}:{self.mode}:{size}".encode())) % 2**31

    def to_json(self) -> dict:
        out = {"kind": self.kind, "name": self.name, "mode": self.mode, "provider": self.provider,
               "size": self.size}
        if self.skip is not None:
            out["status"], out["reason"] = "skipped", self.skip
        else:
            out.update(self.result)
        return out


def error_string(exc: BaseException) -> str:
    """The one line a failed cell (or a failed measurement inside one) records."""
    first = (str(exc).strip().splitlines() or [""])[0]
    name = "OOM" if isinstance(exc, torch.OutOfMemoryError) else type(exc).__name__
    return f"{name}: {first[:300]}"


def parse_sizes(text: str | None, default: list[int], all_sizes: list[int]) -> list[int]:
    """A T list of ``--compile-sizes``/``--op-compile-sizes``: ``all``, ``none`` or ``T1,T2,…``."""
    if text is None:
        return default
    text = text.strip().lower()
    if text == "all":
        return list(all_sizes)
    if text == "none":
        return []
    return [int(v) for v in text.split(",") if v.strip()]


def backend_reason(provider: str, op_names: list[str], device) -> str | None:
    """Why ``provider`` (a trgnet_fast backend) cannot run these ops on ``device``; None if it can."""
    from trgnet_fast.backend import backend_status
    ok, why = backend_status(device)[provider]
    if not ok:
        return f"{provider} backend not usable on {device.type}: {why}"
    missing = [op for op in op_names if provider not in OPS[op].implemented]
    if missing and len(missing) == len(op_names):
        return f"{provider} backend implements none of {', '.join(sorted(set(missing)))} yet"
    return None


def _op_cells(args, device) -> list[Cell]:
    cells = []
    for name in args.ops or list(BENCH_VARIANTS):
        if name not in BENCH_VARIANTS:
            raise SystemExit(f"unknown op {name!r}; known: {', '.join(BENCH_VARIANTS)}")
        spec, variant = BENCH_VARIANTS[name]
        for t in args.op_T:
            size = variant.sizes(args.op_batch, t)
            for mode in args.op_modes:
                for prov in args.providers:
                    c = Cell("op", name, mode, prov, size)
                    c.priority = PRIORITY["op-compile"] if prov.startswith("compile") else PRIORITY["op"]
                    if prov == "compile-ro" and device.type != "cuda":
                        c.skip = "reduce-overhead (CUDA graphs) is CUDA only"
                    elif prov.startswith("compile") and t not in args.op_compile_T:
                        c.skip = f"compile providers only at T in {args.op_compile_T} (--op-compile-sizes)"
                    elif prov in ("triton", "cuda"):
                        c.skip = backend_reason(prov, [spec.name], device)
                    cells.append(c)
    return cells


def _model_cells(args, device, model_ops: list[str]) -> list[Cell]:
    model_err = None
    try:
        import trgnet_fast.model  # noqa: F401  (imports every op module the model uses)
        from trgnet_fast import TRGNet  # noqa: F401
    except Exception as exc:
        model_err = f"TRGNet not importable: {type(exc).__name__}: {exc}"
    priority = {"eager": PRIORITY["model-eager"], "compile": PRIORITY["model-compile"],
                "compile-ro": PRIORITY["model-ro"]}
    cells = []
    for mode in args.model_modes:
        for t in args.model_T:
            n = args.batch if mode == "train" else 1
            size = {"N": n, "T": t, "V": 25, "K": 52}
            for prov in args.providers:
                c = Cell("model", "trgnet", mode, prov, size)
                c.priority = priority.get(prov, PRIORITY["model-fused"])
                if model_err:
                    c.skip = model_err
                elif prov == "compile-ro" and device.type != "cuda":
                    c.skip = "reduce-overhead (CUDA graphs) is CUDA only"
                elif prov.startswith("compile") and not args.compile_T:
                    c.skip = ("model compile is off by default on CPU (inductor compiles the model for "
                              "minutes); --compile-sizes 128 turns it on")
                elif prov.startswith("compile") and t not in args.compile_T:
                    c.skip = (f"compile providers only at T in {args.compile_T} (--compile-sizes; "
                              "a first compile of the model takes ~1 min)")
                elif prov in ("triton", "cuda"):
                    c.skip = backend_reason(prov, model_ops, device)
                cells.append(c)
    return cells


def plan(args, device) -> tuple[list[Cell], dict]:
    """(the cells in running order, notes for the JSON's ``meta.plan``)."""
    cells: list[Cell] = []
    notes: dict = {}
    if "ops" in args.what:
        cells += _op_cells(args, device)
    if "model" in args.what:
        notes["model_ops"] = sorted(OPS)
        cells += _model_cells(args, device, notes["model_ops"])
    # stable sort: keeps (what, mode, size, provider) order inside a priority class
    cells.sort(key=lambda c: c.priority)
    return cells, notes
