"""The machine a run describes in results.json and results.md: ``trgnet_fast.env_info.collect()`` (versions,
GPUs, native build, backend status, the ops' implemented backends; what `trgnet info` prints) plus the
benchmark-only facts: date, host, git commit, CPU model and threads, load average, environment variables, and
for the benchmarked GPU its SM count, driver (nvidia-smi), cuDNN and the TF32 / cudnn.benchmark settings."""
from __future__ import annotations

import datetime as _dt
import os
import socket
import subprocess

import torch

from trgnet_fast import env_info

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV_VARS = ("TRGNET_BACKEND", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


def _cmd(args, timeout=15) -> str | None:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return r.stdout.strip() if r.returncode == 0 else None
    except Exception:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _numpy_version() -> str | None:
    try:
        import numpy
        return numpy.__version__
    except Exception:
        return None


def _gpu(device) -> dict:
    """What ``collect()["gpus"]`` does not say of the benchmarked GPU: SMs, driver, cuDNN, TF32 and
    cudnn.benchmark settings."""
    p = torch.cuda.get_device_properties(device)
    return {
        "gpu_sms": p.multi_processor_count,
        "driver": _cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        "cudnn": torch.backends.cudnn.version(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def describe(device) -> dict:
    """``env_info.collect()`` plus the benchmark-only facts (flat keys, JSON-serialisable)."""
    import trgnet_fast
    env = env_info.collect()
    status = _cmd(["git", "-C", REPO_ROOT, "status", "--porcelain"])
    env.update({
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "trgnet_fast_path": os.path.dirname(trgnet_fast.__file__),
        "git_commit": _cmd(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"]) or "unknown (no commit)",
        "git_dirty_files": None if status is None else len([ln for ln in status.splitlines() if ln.strip()]),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ[k] for k in ENV_VARS if os.environ.get(k) is not None},
        "numpy": _numpy_version(),
    })
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        gpu = env["gpus"][index]
        env.update(gpu=gpu["name"], gpu_capability=gpu["capability"], gpu_memory_gib=gpu["memory_gib"],
                   **_gpu(device))
    return env
