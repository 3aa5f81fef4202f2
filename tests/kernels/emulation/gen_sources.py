#!/usr/bin/env python3
"""Copies the CUDA kernel sources of kernels/ into a directory, rewriting ONLY the CUDA-only syntax
that g++ cannot compile, so that the CPU emulation (shim/kernel_emu.h) can run them:

  * every launch ``name<targs><<<grid, block, smem, stream>>>(args)`` in kernels/<op>.cu becomes
    ``::kemu::launch("name", name<targs>, grid, block, smem, stream)(args)``;
  * the one inline-PTX statement of kernels/cuda_common.cuh (``asm volatile("st.global.v4.b32 ...")``
    in store_rows) becomes ``KEMU_ST_GLOBAL_V4(address, raw);`` (an alignment-checked 16-byte copy).

Everything else is copied byte for byte. Raises GenerationError when a pattern is not found where it
is expected, or when CUDA-only syntax is left over, so that a change of the kernels that the rewrite
does not understand fails loudly instead of testing something else.

Usage: gen_sources.py OUT_DIR [--kernels KERNELS_DIR]
"""
import argparse
import pathlib
import re
import sys

KERNELS_DIR = pathlib.Path(__file__).resolve().parents[3] / "kernels"
OPS = ("linear_attention", "multiscale_graph_conv", "adaptive_graph_conv")
COMMON = ("cuda_common.cuh", "host_device.h")

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


def rewrite_launches(text: str, filename: str) -> tuple[str, int]:
    expected = text.count("<<<")
    if expected == 0 or expected != text.count(">>>"):
        raise GenerationError(f"{filename}: found {text.count('<<<')} '<<<' and {text.count('>>>')} '>>>'")
    out, n_open = LAUNCH_OPEN.subn(lambda m: f'::kemu::launch("{m.group(1).split("<")[0]}", {m.group(1)}, ', text)
    out, n_close = LAUNCH_CLOSE.subn(")(", out)
    if not (n_open == n_close == expected) or "<<<" in out or ">>>" in out:
        raise GenerationError(f"{filename}: {expected} launches, rewrote {n_open} openings and {n_close} closings")
    return out, expected


def rewrite_common(text: str) -> str:
    out, n = ST_GLOBAL_V4.subn(lambda m: f"KEMU_ST_GLOBAL_V4({m.group('addr').strip()}, raw);", text)
    if n != 1:
        raise GenerationError(f"cuda_common.cuh: expected 1 st.global.v4.b32 asm statement, rewrote {n}")
    if re.search(r"\basm\b", out):
        raise GenerationError("cuda_common.cuh: inline asm left after the rewrite")
    return out


def strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)


def check_no_cuda_only(text: str, filename: str) -> None:
    text = strip_comments(text)
    for pattern in (r"\basm\b", r"<<<", r">>>", r"__shfl", r"atomic\w*\(", r"__syncwarp", r"__threadfence"):
        if re.search(pattern, text):
            raise GenerationError(f"{filename}: '{pattern}' is not supported by the emulation")
    shared = re.findall(r"(?:\bextern\s+)?__shared__[^;]*;", text)
    if any(not s.startswith("extern") for s in shared) or len(shared) > (filename == "cuda_common.cuh"):
        raise GenerationError(f"{filename}: static __shared__ arrays are not emulated: {shared}")


def generate(out_dir, kernels_dir=KERNELS_DIR) -> dict:
    """Writes the rewritten sources into out_dir; returns {file: launches rewritten}."""
    out_dir, kernels_dir = pathlib.Path(out_dir), pathlib.Path(kernels_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    common = (kernels_dir / "cuda_common.cuh").read_text()
    common = rewrite_common(common)
    check_no_cuda_only(common, "cuda_common.cuh")
    (out_dir / "cuda_common.cuh").write_text(common)
    counts["cuda_common.cuh"] = 0
    (out_dir / "host_device.h").write_text((kernels_dir / "host_device.h").read_text())
    for op in OPS:
        for ext in (".h", ".cuh"):
            text = (kernels_dir / f"{op}{ext}").read_text()
            check_no_cuda_only(text, f"{op}{ext}")
            (out_dir / f"{op}{ext}").write_text(text)
        cu, n = rewrite_launches((kernels_dir / f"{op}.cu").read_text(), f"{op}.cu")
        check_no_cuda_only(cu, f"{op}.cu")
        # compiled as C++ by g++: keep the name, the driver passes `-x c++`
        (out_dir / f"{op}.cu").write_text(cu)
        counts[f"{op}.cu"] = n
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--kernels", default=str(KERNELS_DIR))
    args = ap.parse_args(argv)
    for name, n in generate(args.out_dir, args.kernels).items():
        print(f"{name}: {n} launches rewritten" if name.endswith(".cu") else f"{name}: asm store rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
