"""What `trgnet info` reports: versions, GPU, native build, and which backends each op can use."""
from __future__ import annotations

import platform
import sys

import torch

from trgnet_fast import __version__, _native
from trgnet_fast.backend import backend_status
from trgnet_fast.ops.registry import OPS


def _triton_version() -> str:
    try:
        import triton
    except Exception as exc:  # reported, not fatal: the package works without triton
        return f"unavailable ({exc.__class__.__name__}: {exc})"
    return triton.__version__


def collect() -> dict:
    """A JSON-serialisable description of this environment."""
    gpus = [{"name": torch.cuda.get_device_name(i),
             "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    devices = ["cpu"] + (["cuda"] if gpus else [])
    backends = {dev: {name: {"usable": ok, "reason": why}
                      for name, (ok, why) in backend_status(dev).items()} for dev in devices}
    return {
        "trgnet_fast": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _triton_version(),
        "gpus": gpus,
        "native": _native.native_build_info(),
        "backends": backends,
        "ops": {name: sorted(spec.implemented) for name, spec in OPS.items()},
    }


def format_info(info: dict) -> str:
    lines = [f"trgnet_fast {info['trgnet_fast']}",
             f"python      {info['python']} ({info['platform']})",
             f"torch       {info['torch']} (CUDA {info['torch_cuda'] or 'none'})",
             f"triton      {info['triton']}"]
    if info["gpus"]:
        lines += [f"gpu {i}       {g['name']} (sm_{g['capability'].replace('.', '')}, "
                  f"{g['memory_gib']} GiB)" for i, g in enumerate(info["gpus"])]
    else:
        lines.append("gpu         none")
    lines.append("native      " + ", ".join(f"{k}={v}" for k, v in info["native"].items()))
    for dev, status in info["backends"].items():
        lines.append(f"backends on {dev}:")
        lines += [f"  {name:7s} {'usable' if s['usable'] else 'unavailable: ' + s['reason']}"
                  for name, s in status.items()]
    lines.append("fused ops (implemented backends):")
    lines += [f"  {op:20s} {', '.join(b)}" for op, b in info["ops"].items()]
    return "\n".join(lines)
