"""Static resource report of the fused kernels, made on a machine without a GPU.

For every kernel: registers per thread, local memory (register spills or local arrays), shared memory,
an occupancy bound (resident blocks per SM from registers, shared memory and threads), and an instruction
mix from the disassembly: global loads/stores by width (16-byte vector accesses or not), shared-memory
traffic, FMA and tensor-core (HMMA/HGMMA) instructions, special-function calls (MUFU), barriers, atomics.
These are static counts (instructions in the code, not executed instructions): they say whether a kernel
spills, how wide its memory accesses are and what does the math, not how fast it runs.

* Triton: each benchmark variant of the op registry (``BENCH_VARIANTS`` in trgnet_fast/ops/registry.py; its
  op's ``triton_module``, ``make_inputs`` and the variant's ``sizes(N, T)``) runs its Triton forward and
  backward on CPU tensors of the benchmark shape with ``JITFunction.run`` replaced by an offline compile for
  the target (nothing is launched; the outputs are uninitialised memory). So the kernels, constexprs, launch
  sizes and argument specialisations are those a GPU run at that shape compiles. Needs triton, not a GPU,
  not ``TRITON_INTERPRET``.
* CUDA: every ``kernels/<op>*.cu`` of the selected ops through ``nvcc -ptx`` (setup.py's -O3 -std=c++17) and
  ``ptxas`` for the same arch; every template instantiation is reported (filter with ``--dtypes``).

The disassembler, ``cuobjdump`` and ``ptxas`` are the ones triton bundles, so the Triton part needs no
CUDA toolkit; the CUDA part needs ``nvcc``. The compiling is in benchmarks/bench/kernel_build.py, the reading
of the compiled kernels in benchmarks/bench/cubin.py; this file is the command line and the markdown.

    python benchmarks/kernel_report.py                       # both, N=8, T=6000, fp32 + bf16
    python benchmarks/kernel_report.py --what triton --ops linear_attention --out report.md
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench; trgnet_fast of this checkout

from bench.cubin import KernelReport  # noqa: E402
from bench.kernel_build import cuda_reports, cuda_sources, triton_reports  # noqa: E402


SASS_COLUMNS = ("LDG.128", "LDG.64", "LDG.32", "LDG.16", "STG.128", "STG.64", "STG.32", "STG.16", "LDS", "STS",
                "fp32 FMA/MUL/ADD", "tensor core (HMMA)", "tensor core (HGMMA)", "MUFU (special function)",
                "barrier", "atomic", "local ld/st")


def render(reports: list[KernelReport], meta: dict) -> str:
    lines = [f"# Kernel resource report ({meta['arch']})", "",
             f"{meta['when']}; torch {meta['torch']}, triton {meta['triton']}, nvcc {meta['nvcc']}; "
             f"float32 matmul precision {meta['fp32_matmul_precision']!r}; "
             f"Triton kernels compiled at N={meta['N']}, T={meta['T']} (the benchmark shapes). Static counts "
             "from the disassembly (instructions in the code, not executed). blocks/SM: upper bound from "
             "registers, shared memory and threads (CUDA kernels: dynamic shared memory is set at launch and "
             "not included). stack+local: bytes per thread in local memory (register spills, local arrays); "
             "`local ld/st` counts the instructions that touch it.", ""]
    head = ["backend", "op", "kernel", "threads", "grid", "regs", "stack+local B", "smem B", "blocks/SM"]
    cols = [c for c in SASS_COLUMNS if any(r.sass.get(c) for r in reports)]
    lines.append("| " + " | ".join(head + cols) + " |")
    lines.append("|" + "---|" * (len(head) + len(cols)))
    for r in reports:
        smem = f"{r.static_smem}+{r.dynamic_smem}" if r.dynamic_smem is not None else f"{r.static_smem}+launch"
        grid = "×".join(map(str, r.grid)) if r.grid else ""
        row = [r.backend, r.op, f"`{r.name}`", str(r.threads or "?"), grid, str(r.registers),
               str(r.stack_bytes + r.local_bytes), smem, str(r.blocks_per_sm if r.blocks_per_sm is not None else "?")]
        row += [str(r.sass.get(c, 0)) for c in cols]
        lines.append("| " + " | ".join(row) + " |")
    configs = [r for r in reports if r.config]
    if configs:
        lines += ["", "Triton launch configurations:", ""]
        lines += [f"* {r.op} `{r.name}`: {r.config}" for r in configs]
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    import torch
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    nvcc = shutil.which("nvcc")
    nvcc_version = "not found"
    if nvcc:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release ([\d.]+)", text)
        nvcc_version = m.group(1) if m else "unknown"
    return {"torch": torch.__version__, "triton": triton_version, "nvcc": nvcc_version}


def parse_args(argv=None):
    from trgnet_fast.ops.registry import BENCH_VARIANTS

    variants = list(BENCH_VARIANTS)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=("both", "triton", "cuda"), default="both")
    p.add_argument("--ops", default=",".join(variants),
                   help="benchmark variants of trgnet_fast/ops/registry.py (BENCH_VARIANTS), comma-separated; "
                        "the CUDA part compiles their ops' kernels/<op>*.cu")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated torch dtype names")
    p.add_argument("--size", default="8,6000", help="N,T of the Triton launches (default: the paper shape)")
    p.add_argument("--tf32", action="store_true",
                   help="compile with torch.set_float32_matmul_precision('high'): the fp32 graph-conv dots in TF32")
    p.add_argument("--arch", type=int, default=90, help="compute capability ×10 (default 90: H100/H200)")
    p.add_argument("--out", default=None, help="write the markdown here (and the JSON beside it)")
    args = p.parse_args(argv)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in args.ops if o not in BENCH_VARIANTS]
    if unknown:
        p.error(f"--ops: unknown op(s) {unknown}; expected names from trgnet_fast/ops/registry.py "
                f"(BENCH_VARIANTS): {variants}")
    return args


def main(argv=None) -> int:
    import torch

    os.environ["TRITON_INTERPRET"] = "0"  # a script run: nothing has defined the Triton kernels yet
    args = parse_args(argv)
    dtypes = []
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name.strip(), None)
        if not isinstance(dtype, torch.dtype):
            raise SystemExit(f"kernel_report: --dtypes: {name!r} is not a torch dtype")
        dtypes.append(dtype)
    try:
        n, t = (int(x) for x in args.size.split(","))
    except ValueError:
        raise SystemExit(f"kernel_report: --size: expected N,T (two integers), got {args.size!r}")

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.tf32:
        torch.set_float32_matmul_precision("high")

    reports: list[KernelReport] = []
    with tempfile.TemporaryDirectory(prefix="trgnet_kernel_report_") as tmp:
        work = Path(tmp)
        if args.what in ("both", "triton"):
            reports += triton_reports(args.ops, dtypes, n, t, args.arch, work, say)
        if args.what in ("both", "cuda"):
            reports += cuda_reports(cuda_sources(args.ops), dtypes, args.arch, work, say)
    meta = {"arch": f"sm_{args.arch}a", "when": time.strftime("%Y-%m-%d"), "N": n, "T": t,
            "fp32_matmul_precision": torch.get_float32_matmul_precision(), **_versions()}
    text = render(reports, meta)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        rows = [{**dataclasses.asdict(r), "blocks_per_sm": r.blocks_per_sm} for r in reports]
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "kernels": rows}, indent=1, default=str))
        say(f"# wrote {out} and {out.with_suffix('.json')}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
