#!/usr/bin/env python3
"""Copies the CUDA kernel sources of kernels/ into a directory, rewriting ONLY the CUDA-only syntax
that g++ cannot compile, so that the CPU emulation (shim/kernel_emu.h) can run them:

  * every launch ``name<targs><<<grid, block, smem, stream>>>(args)`` (in kernels/<op>.cu or in a header
    of the op that several translation units share, e.g. kernels/<op>_impl.cuh) becomes
    ``::kemu::launch("name", name<targs>, grid, block, smem, stream)(args)``;
  * the one inline-PTX statement of kernels/cuda_common.cuh (``asm volatile("st.global.v4.b32 ...")``
    in store_rows) becomes ``KEMU_ST_GLOBAL_V4(address, raw);`` (an alignment-checked 16-byte copy).

Everything else is copied byte for byte. An op's kernels may be split over several translation units,
kernels/<op>.cu and kernels/<op>_<part>.cu (see op_sources); the drivers compile each and link them.
Raises GenerationError when a pattern is not found where it is expected, when CUDA-only syntax is left
over, when an op has no kernel launch at all, or when a kernels/*.cu belongs to no op, so that a change of
the kernels that the rewrite does not understand fails loudly instead of testing something else.

The ops are those of the op registry (trgnet_fast/ops/registry.py) unless given.

Usage: gen_sources.py OUT_DIR [--kernels KERNELS_DIR] [--ops OP ...]
"""
import argparse
import pathlib
import re
import sys

KERNELS_DIR = pathlib.Path(__file__).resolve().parents[3] / "kernels"
COMMON = "cuda_common.cuh"

# `name<targs><<<` ... `>>>(`: the kernel must be a template-id (all kernels here are templates).
LAUNCH_OPEN = re.compile(r"\b(\w+_kernel<[^<>;]*>)\s*<<<")
LAUNCH_CLOSE = re.compile(r">>>\s*\(")
ST_GLOBAL_V4 = re.compile(
    r'asm\s+volatile\s*\(\s*"st\.global\.v4\.b32 \[%0\], \{%1, %2, %3, %4\};"\s*'
    r'::\s*"l"\(\s*__cvta_generic_to_global\((?P<addr>[^;]*?)\)\s*\),\s*'
    r'"r"\(raw\.x\),\s*"r"\(raw\.y\),\s*"r"\(raw\.z\),\s*"r"\(raw\.w\)\s*'
    r':\s*"memory"\s*\);',
    re.S,
)


class GenerationError(RuntimeError):
    pass


def registry_ops() -> list[str]:
    """The names of the registered ops (trgnet_fast.ops.registry.OPS)."""
    repo = str(KERNELS_DIR.parent)
    if repo not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, repo)
    from trgnet_fast.ops.registry import OPS

    return [spec.name for spec in OPS.values()]


def owner(stem: str, ops) -> str | None:
    """The op a kernels/ file stem belongs to: <op> or <op>_<part>, the longest op name that fits."""
    fits = [op for op in ops if stem == op or stem.startswith(op + "_")]
    return max(fits, key=len) if fits else None


def op_sources(kernels_dir, ops) -> dict:
    """{op: [the op's translation units kernels/<op>.cu, kernels/<op>_<part>.cu, by name]}. Raises
    GenerationError for an op without one and for a .cu file that belongs to no op."""
    kernels_dir = pathlib.Path(kernels_dir)
    found = {op: [] for op in ops}
    for cu in sorted(kernels_dir.glob("*.cu")):
        op = owner(cu.stem, ops)
        if op is None:
            raise GenerationError(f"{cu.name}: belongs to none of the ops {sorted(ops)}")
        found[op].append(cu)
    missing = [op for op, files in found.items() if not files]
    if missing:
        raise GenerationError(f"no kernels/<op>.cu or kernels/<op>_*.cu for {missing}")
    return found


def rewrite_launches(text: str, filename: str) -> tuple[str, int]:
    """Rewrites every launch of `text`; returns (text, launches). A file without `<<<` is returned as is."""
    expected = text.count("<<<")
    if expected != text.count(">>>"):
        raise GenerationError(f"{filename}: found {text.count('<<<')} '<<<' and {text.count('>>>')} '>>>'")
    if expected == 0:
        return text, 0
    out, n_open = LAUNCH_OPEN.subn(lambda m: f'::kemu::launch("{m.group(1).split("<")[0]}", {m.group(1)}, ', text)
    out, n_close = LAUNCH_CLOSE.subn(")(", out)
    if not (n_open == n_close == expected) or "<<<" in out or ">>>" in out:
        raise GenerationError(f"{filename}: {expected} launches, rewrote {n_open} openings and {n_close} closings")
    return out, expected


def rewrite_common(text: str) -> str:
    out, n = ST_GLOBAL_V4.subn(lambda m: f"KEMU_ST_GLOBAL_V4({m.group('addr').strip()}, raw);", text)
    if n != 1:
        raise GenerationError(f"{COMMON}: expected 1 st.global.v4.b32 asm statement, rewrote {n}")
    if re.search(r"\basm\b", out):
        raise GenerationError(f"{COMMON}: inline asm left after the rewrite")
    return out


def strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)


def check_no_cuda_only(text: str, filename: str) -> None:
    text = strip_comments(text)
    for pattern in (r"\basm\b", r"<<<", r">>>", r"__shfl", r"atomic\w*\(", r"__syncwarp", r"__threadfence"):
        if re.search(pattern, text):
            raise GenerationError(f"{filename}: '{pattern}' is not supported by the emulation")
    shared = re.findall(r"(?:\bextern\s+)?__shared__[^;]*;", text)
    if any(not s.startswith("extern") for s in shared) or len(shared) > (filename == COMMON):
        raise GenerationError(f"{filename}: static __shared__ arrays are not emulated: {shared}")


def generate(out_dir, kernels_dir=KERNELS_DIR, ops=None) -> dict:
    """Writes the rewritten sources of kernels_dir (every .cu, .cuh and .h) into out_dir; returns
    {file: launches rewritten}. ops: the op names (default: the op registry's); every op must have at
    least one launch over its files."""
    out_dir, kernels_dir = pathlib.Path(out_dir), pathlib.Path(kernels_dir)
    ops = list(registry_ops() if ops is None else ops)
    op_sources(kernels_dir, ops)  # every .cu belongs to an op, every op has one
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for src in sorted(p for p in kernels_dir.iterdir() if p.suffix in (".cu", ".cuh", ".h")):
        text = src.read_text()
        if src.name == COMMON:
            text, n = rewrite_common(text), 0
        else:
            text, n = rewrite_launches(text, src.name)
        check_no_cuda_only(text, src.name)
        # .cu files are compiled as C++ by g++: the names are kept, the drivers pass `-x c++`
        (out_dir / src.name).write_text(text)
        counts[src.name] = n
    for op in ops:
        if not launches_of(op, counts, ops):
            raise GenerationError(f"{op}: no kernel launch found in kernels/{op}*")
    return counts


def launches_of(op: str, counts: dict, ops) -> int:
    """Launches rewritten in the files of `op` (kernels/<op>.* and kernels/<op>_*.*), from generate's counts."""
    return sum(n for name, n in counts.items() if owner(name.split(".")[0], ops) == op)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--kernels", default=str(KERNELS_DIR))
    ap.add_argument("--ops", nargs="+", help="op names (default: those of trgnet_fast/ops/registry.py)")
    args = ap.parse_args(argv)
    for name, n in generate(args.out_dir, args.kernels, args.ops).items():
        if name == COMMON:
            print(f"{name}: asm store rewritten")
        elif n:
            print(f"{name}: {n} launches rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
