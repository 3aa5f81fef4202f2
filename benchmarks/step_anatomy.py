"""Step anatomy: what one TRGNet training step dispatches, where it syncs the host, and what autograd saves; what
the N=1 inference dispatches.

    python benchmarks/step_anatomy.py                # backends usable here, N=2 T=300, saved at N=8 T=6000
    python benchmarks/step_anatomy.py --backends torch,cuda --out results/anatomy
    python benchmarks/step_anatomy.py --backends cuda --no-saved --check-no-sync   # exit 1 if the step syncs
    python benchmarks/step_anatomy.py --backends cuda --mask-mode correct          # the mode CUDA graphs need

Runs on a CPU. One steady-state step of the trainer (``Trainer.train_step`` on the published PKU config:
SAEP → TrainStep (model + TRGNetLoss) → backward → Adam; see bench/anatomy_blocks.py) per backend, counted with
a dispatch mode (bench/anatomy.py): non-view ops per phase and block (a proxy for GPU kernel launches; custom ops
``trgnet::*`` / ``trgnet_triton::*`` on lines of their own), the host-syncing ops with the trgnet_fast line that
issued them, and the bytes autograd holds when backward starts (real tensors at the count size; at --saved-n /
--saved-t the model runs on fake tensors and the loss for real). Then one eval forward of one unpadded video of
--infer-t frames, as the evaluation runs it (bench/anatomy_blocks.py:measure_inference; the goal's N=1 inference):
its ops per block and its host syncs. Markdown to stdout, ``--out DIR`` also writes step_anatomy.md and
step_anatomy.json. Progress on stderr.

The triton backend runs in Triton's CPU interpreter here (TRITON_INTERPRET=1, set below when there is no GPU):
its counts take tens of minutes, so it is off by default on CPU (--backends torch,cuda,triton turns it on); its
saved bytes at the full size are not measured (the interpreter cannot launch on fake tensors).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the Triton kernels are defined
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trgnet_fast.backend import backend_status  # noqa: E402
from trgnet_fast.model.masking import MASK_MODES  # noqa: E402

from bench.anatomy_blocks import (PHASES, STEP_PHASES, block_order, build_trainer_step,  # noqa: E402
                                  measure_inference, measure_step, saved_bytes_full_size, saved_total)
from bench.environment import describe  # noqa: E402

GIB, MIB = 2 ** 30, 2 ** 20
CPU_DEFAULT_BACKENDS = ("torch", "cuda")  # triton: interpreted on CPU, tens of minutes per step


def progress(msg: str) -> None:
    print(f"[step_anatomy] {msg}", file=sys.stderr, flush=True)


def default_backends() -> list[str]:
    """Every backend usable on this machine's default device (triton only with a GPU)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    usable = [name for name, (ok, _) in backend_status(device).items() if ok]
    return usable if device == "cuda" else [b for b in usable if b in CPU_DEFAULT_BACKENDS]


# ---------------------------------------------------------------------------------------------------- measuring
def saved_skip_reason(backend: str, args) -> str | None:
    """Why the full-size saved bytes are not measured for ``backend``, or None."""
    if args.no_saved:
        return "not measured (--no-saved)"
    if backend == "triton" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "not measured: the Triton interpreter cannot launch on fake tensors"
    return None


def op_rows(counts) -> list[dict]:
    """OpCounts' ops as JSON rows {phase, block, op, count}."""
    return [{"phase": phase, "block": block, "op": op, "count": n}
            for (phase, block), ops in sorted(counts.ops.items()) for op, n in sorted(ops.items())]


def measure_backend(backend: str, args, **model_options) -> dict:
    """Counts, syncs and saved bytes of one backend's step, and the counts and syncs of its N=1 inference
    (``inference``), as a JSON-ready dict. model_options: ``build_trainer_step``'s ``model_overrides`` /
    ``text_dim`` (the published model without them)."""
    progress(f"{backend}: counting one step at N={args.n}, T={args.t}")
    parts = build_trainer_step(args.n, args.t, backend, args.seed, **model_options)
    blocks = block_order(parts.model)
    measured = measure_step(parts)
    counts = measured.counts
    result = {
        "backend": backend, "blocks": blocks, "step_seconds": round(measured.seconds, 2),
        "ops": op_rows(counts),
        "excluded": {kind: dict(ops) for kind, ops in counts.excluded.items()},
        "syncs": [vars(s) for s in counts.syncs],
        "saved_bytes_count_size": measured.saved_bytes,
        "saved_bytes": None, "saved_note": saved_skip_reason(backend, args),
    }
    if result["saved_note"] is None:
        progress(f"{backend}: saved bytes at N={args.saved_n}, T={args.saved_t} (model on fake tensors)")
        full = build_trainer_step(args.saved_n, args.saved_t, backend, args.seed, **model_options)
        result["saved_bytes"] = saved_bytes_full_size(full, args.seed)
    progress(f"{backend}: counting one N=1 inference at T={args.infer_t}")
    inference = measure_inference(1, args.infer_t, backend, args.seed, **model_options)
    result["inference"] = {"ops": op_rows(inference), "syncs": [vars(s) for s in inference.syncs]}
    return result


# ---------------------------------------------------------------------------------------------------- reporting
def op_total(result: dict, phases=None, blocks=None, namespace: str | None = None) -> int:
    return sum(r["count"] for r in result["ops"]
               if (phases is None or r["phase"] in phases) and (blocks is None or r["block"] in blocks)
               and (namespace is None or r["op"].split("::")[0] == namespace))


def custom_namespaces(result: dict) -> list[str]:
    return sorted({r["op"].split("::")[0] for r in result["ops"]} - {"aten"})


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def summary_table(results: list[dict], args) -> list[str]:
    header = ["backend", "forward", "loss", "backward", "optimizer", "step ops", "of which custom",
              "fwd+loss+bwd", "host syncs (step / bookkeeping)", f"saved GiB (N={args.saved_n}, T={args.saved_t})",
              f"saved MiB (N={args.n}, T={args.t})", "counted step s",
              f"inference ops (N=1, T={args.infer_t})", "inference host syncs"]
    rows = []
    for r in results:
        syncs_step = sum(1 for s in r["syncs"] if s["phase"] != "bookkeeping")
        saved = "–" if r["saved_bytes"] is None else f"{saved_total(r['saved_bytes']) / GIB:.2f}"
        rows.append([r["backend"], *(op_total(r, [p]) for p in STEP_PHASES), op_total(r, STEP_PHASES),
                     sum(op_total(r, STEP_PHASES, namespace=ns) for ns in custom_namespaces(r)),
                     op_total(r, ("forward", "loss", "backward")), f"{syncs_step} / {len(r['syncs']) - syncs_step}",
                     saved, f"{saved_total(r['saved_bytes_count_size']) / MIB:.1f}", r["step_seconds"],
                     op_total(r["inference"]), len(r["inference"]["syncs"])])
    return table(header, rows)


def block_table(result: dict) -> list[str]:
    """Ops per block (rows) and phase (columns), a total row and one row per custom-op namespace."""
    used = {r["block"] for r in result["ops"]}
    rows = [[block, *(op_total(result, [p], [block]) or "" for p in PHASES), op_total(result, blocks=[block])]
            for block in result["blocks"] if block in used]
    rows.append(["**total**", *(op_total(result, [p]) for p in PHASES), op_total(result)])
    rows += [[f"custom `{ns}::*`", *(op_total(result, [p], namespace=ns) or "" for p in PHASES),
              op_total(result, namespace=ns)] for ns in custom_namespaces(result)]
    excluded = ", ".join(f"{kind} {sum(ops.values())}" for kind, ops in sorted(result["excluded"].items()))
    return table(["block", *PHASES, "total"], rows) + ["", f"Not counted: {excluded}."]


def inference_table(results: list[dict]) -> list[str]:
    """The N=1 inference's ops per block (rows) and backend (columns), a total row and one row per custom-op
    namespace."""
    inference = [r["inference"] for r in results]
    used = {row["block"] for i in inference for row in i["ops"]}
    blocks = [b for b in dict.fromkeys(b for r in results for b in r["blocks"]) if b in used]
    rows = [[block, *(op_total(i, blocks=[block]) or "" for i in inference)] for block in blocks]
    rows.append(["**total**", *(op_total(i) for i in inference)])
    rows += [[f"custom `{ns}::*`", *(op_total(i, namespace=ns) or "" for i in inference)]
             for ns in sorted({ns for i in inference for ns in custom_namespaces(i)})]
    return table(["block", *(r["backend"] for r in results)], rows)


def sync_table(results: list[dict]) -> list[str]:
    rows = {}
    for r in results:
        for s in r["syncs"] + r["inference"]["syncs"]:
            key = (r["backend"], s["phase"], s["block"], s["op"], s["reason"], f"`{s['where']}`")
            rows[key] = rows.get(key, 0) + 1
    return table(["backend", "phase", "block", "op", "why", "issued at", "calls"],
                 [[*key, n] for key, n in rows.items()])


def saved_table(results: list[dict]) -> list[str]:
    measured = [r for r in results if r["saved_bytes"] is not None]
    if not measured:
        return ["(not measured)"]
    blocks = list(dict.fromkeys(b for r in measured for b in r["blocks"]))
    used = {b for r in measured for b in r["saved_bytes"]}
    rows = [[block, *(f"{r['saved_bytes'].get(block, 0) / GIB:.3f}" for r in measured)]
            for block in blocks if block in used]
    rows.append(["**total**", *(f"**{saved_total(r['saved_bytes']) / GIB:.3f}**" for r in measured)])
    rows.append(["resident (parameters, buffers; not in the total)",
                 *(f"{r['saved_bytes'].get('resident', 0) / GIB:.3f}" for r in measured)])
    return table(["block", *(f"{r['backend']} GiB" for r in measured)], rows)


def markdown(results: list[dict], env: dict, args, seconds: float) -> str:
    commit = env["git_commit"].split()[0][:10] + (" + local changes" if env.get("git_dirty_files") else "")
    lines = [f"# Step anatomy: one TRGNet training step (PKU-subject published config, model.mask_mode "
             f"{args.mask_mode}), counted on CPU", "",
             f"{env['date_utc']}, torch {env['torch']}, triton {env['triton']}, Python {env['python']}, "
             f"{env['platform']}, CPU {env['cpu']} ({env['cpu_count']} cores), commit {commit}. "
             f"Report time {seconds:.0f} s.", "",
             f"Counts: one steady-state `Trainer.train_step` at N={args.n}, T={args.t}, seed {args.seed}. Ops = "
             "dispatched non-view ops (views, allocations, profiler markers and Adam's host-side step-counter ops "
             "not counted); step ops = forward + loss + backward + optimizer (Adam foreach).", "",
             "## Summary", "", *summary_table(results, args), ""]
    for r in results:
        lines += [f"## Ops per block: {r['backend']}", "", *block_table(r), ""]
    lines += [f"## N=1 inference ops per block (T={args.infer_t})", "",
              "One eval forward (`model.eval()`, no grad, `check_values=False`, as the evaluation runs it) of one "
              "unpadded video, counted as the step is.", "", *inference_table(results), "",
              "## Host syncs", "", *sync_table(results), "",
              f"## Saved for backward when backward starts, N={args.saved_n}, T={args.saved_t}", "",
              "Model blocks on fake tensors, loss for real on CPU; each storage once, full size, first saver.", "",
              *saved_table(results)]
    notes = [f"- {r['backend']}: saved bytes {r['saved_note']}" for r in results if r["saved_note"]]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_outputs(out_dir: str, text: str, results: list[dict], env: dict, args, seconds: float) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "step_anatomy.md"), "w", encoding="utf-8") as f:
        f.write(text)
    meta = {"env": env, "args": vars(args), "seconds": round(seconds, 1)}
    with open(os.path.join(out_dir, "step_anatomy.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "backends": results}, f, indent=1, default=str)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
                   default=None, help="comma list of torch,cuda,triton (default: usable here; triton only on GPU)")
    p.add_argument("--n", type=int, default=2, help="batch size of the counted step")
    p.add_argument("--t", type=int, default=300, help="frames of the counted step")
    p.add_argument("--saved-n", type=int, default=8, help="batch size of the saved-bytes measurement")
    p.add_argument("--saved-t", type=int, default=6000, help="frames of the saved-bytes measurement")
    p.add_argument("--no-saved", action="store_true", help="skip the full-size saved-bytes measurement")
    p.add_argument("--infer-t", type=int, default=None, help="frames of the counted N=1 inference (default: --t)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-mode", choices=MASK_MODES, default="published",
                   help="model.mask_mode (correct: what train.cuda_graphs needs, docs/training.md#cuda-graphs)")
    p.add_argument("--out", default=None, help="directory for step_anatomy.md and step_anatomy.json")
    p.add_argument("--check-no-sync", action="store_true",
                   help="exit 1 (listing them) if the step or the inference issues any host-syncing op")
    args = p.parse_args(argv)
    args.infer_t = args.infer_t or args.t
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    backends = args.backends or default_backends()
    start = time.perf_counter()
    results = [measure_backend(b, args, model_overrides={"mask_mode": args.mask_mode}) for b in backends]
    seconds = time.perf_counter() - start
    env = describe(torch.device("cpu"))
    text = markdown(results, env, args, seconds)
    print(text)
    if args.out:
        write_outputs(args.out, text, results, env, args, seconds)
        progress(f"wrote {args.out}/step_anatomy.md and .json")
    syncs = [(r["backend"], s) for r in results for s in r["syncs"] + r["inference"]["syncs"]]
    if args.check_no_sync and syncs:
        for backend, s in syncs:
            print(f"sync: {backend} {s['phase']} {s['block']} {s['op']} at {s['where']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
