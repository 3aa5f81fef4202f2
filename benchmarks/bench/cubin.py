"""Reading a compiled kernel (cubin) with the CUDA binary tools: registers, stack and local memory, shared
memory (``cuobjdump -res-usage``), the static instruction mix (``cuobjdump -sass``), an occupancy bound for
sm_90, and the report row of one kernel (``KernelReport``). Used by ``benchmarks/kernel_report.py``."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

# sm_90 (H100 / H200) per-SM limits (CUDA C Programming Guide, compute capability 9.0)
SM90 = {"regs": 65536, "threads": 2048, "blocks": 32, "smem": 233472, "smem_reserved_per_block": 1024,
        "reg_alloc_unit": 256}


def tool(name: str) -> str:
    """A CUDA binary tool bundled with triton (``ptxas``, ``cuobjdump``, ``nvdisasm``), else from PATH."""
    try:
        import triton
        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"kernel_report: {name} not found (neither bundled with triton nor on PATH)")
    return found


@dataclasses.dataclass
class KernelReport:
    backend: str               # "triton" | "cuda"
    op: str                    # op name, or the .cu file's stem
    name: str                  # kernel (demangled for CUDA)
    registers: int
    local_bytes: int           # per thread (cuobjdump LOCAL)
    stack_bytes: int           # per thread (cuobjdump STACK): register spills and local arrays
    static_smem: int
    dynamic_smem: int | None   # Triton: known at compile time; CUDA: set at launch (None)
    threads: int | None        # per block
    grid: tuple | None = None  # Triton launches at the report's shape
    config: str = ""           # constexprs / warps
    sass: dict = dataclasses.field(default_factory=dict)

    @property
    def blocks_per_sm(self) -> int | None:
        """Upper bound on resident blocks per SM (registers, shared memory, threads, block slots)."""
        if not self.threads:
            return None
        warps = (self.threads + 31) // 32
        unit = SM90["reg_alloc_unit"]
        warp_regs = max(1, -(-self.registers * 32 // unit) * unit)
        by_regs = (SM90["regs"] // warp_regs) // warps
        smem = self.static_smem + (self.dynamic_smem or 0)
        by_smem = SM90["smem"] // (smem + SM90["smem_reserved_per_block"])
        return min(by_regs, by_smem, SM90["threads"] // self.threads, SM90["blocks"])


_RES_FUNC = re.compile(r"^\s*Function (\S+):\s*$")
_RES_LINE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def first_match_per_section(text: str, header: re.Pattern, value: re.Pattern) -> dict[str, re.Match]:
    """{group 1 of a ``header`` line: the first ``value`` match in the lines after it} (cuobjdump and PTX
    listings name a function, then describe it)."""
    out, current = {}, None
    for line in text.splitlines():
        m = header.search(line)
        if m:
            current = m.group(1)
            continue
        m = value.search(line)
        if m and current:
            out[current] = m
            current = None
    return out


def resource_usage(cubin: Path) -> dict[str, dict]:
    """{mangled function: {registers, stack, shared, local}} from ``cuobjdump -res-usage``."""
    text = subprocess.run([tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    return {fn: dict(zip(("registers", "stack", "shared", "local"), map(int, m.groups())))
            for fn, m in first_match_per_section(text, _RES_FUNC, _RES_LINE).items()}


_SASS_FUNC = re.compile(r"^\s*Function : (\S+)")
_SASS_INSN = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


def _width(opcode: str) -> str:
    parts = opcode.split(".")
    for bits in ("128", "64"):
        if bits in parts:
            return bits
    for small, bits in (("U16", "16"), ("S16", "16"), ("U8", "8"), ("S8", "8")):
        if small in parts:
            return bits
    return "32"


def classify(opcode: str) -> str | None:
    """The report's category of one SASS opcode (None: not counted)."""
    base = opcode.split(".")[0]
    if base == "LDG":
        return f"LDG.{_width(opcode)}"
    if base == "STG":
        return f"STG.{_width(opcode)}"
    if base in ("LDS", "LDSM"):
        return "LDS"
    if base == "STS":
        return "STS"
    if base in ("LDL", "STL"):
        return "local ld/st"
    if base in ("FFMA", "FMUL", "FADD"):
        return "fp32 FMA/MUL/ADD"
    if base in ("DFMA", "DMUL", "DADD"):
        return "fp64 FMA/MUL/ADD"
    if base in ("HMMA", "HGMMA", "IMMA", "DMMA"):
        return "tensor core (" + base + ")"
    if base == "MUFU":
        return "MUFU (special function)"
    if base in ("BAR", "SYNCS"):
        return "barrier"
    if base in ("RED", "ATOM", "ATOMG", "REDG"):
        return "atomic"
    if base == "SHFL":
        return "SHFL"
    return None


def sass_mix(cubin: Path) -> dict[str, Counter]:
    """{mangled function: Counter(category -> static instruction count)} from ``cuobjdump -sass``."""
    text = subprocess.run([tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    out: dict[str, Counter] = {}
    current = None
    for line in text.splitlines():
        m = _SASS_FUNC.match(line)
        if m:
            current = out.setdefault(m.group(1), Counter())
            continue
        m = _SASS_INSN.search(line)
        if m and current is not None:
            category = classify(m.group(1))
            if category:
                current[category] += 1
    return out


def demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    text = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout
    return dict(zip(names, text.splitlines()))
