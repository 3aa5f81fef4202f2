"""torch.distributed helpers. Launch with ``torchrun --nproc_per_node N -m trgnet_fast.cli train ...`` (or the
``trgnet`` script); the backend is NCCL on GPU and gloo on CPU. Without the torchrun environment everything
runs in one process."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" → cuda:<local_rank> when CUDA is available, else cpu; "cuda" → cuda:<local_rank>."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # meta, mps, ...: nothing here runs there
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available on this machine")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group from torchrun's environment (WORLD_SIZE > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` across ranks (in place on a copy placed on the process-group's device)."""
    if not (info.enabled and dist.is_initialized()):
        return t
    dev = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = t.detach().to(dev, torch.float64).clone()
    dist.all_reduce(buf)
    return buf.to(t.device)


def reduce_metrics(metrics, info: DistInfo):
    """All-reduce the raw counts of a ``SegmentationMetrics`` so that every rank holds the global scores."""
    if info.enabled and dist.is_initialized():
        metrics.from_tensor(all_reduce_sum(metrics.to_tensor(), info))
    return metrics


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
