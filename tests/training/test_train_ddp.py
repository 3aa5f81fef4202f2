"""DDP with 2 gloo processes on CPU (torch.multiprocessing.spawn, the same code path torchrun uses: the
Trainer reads RANK/WORLD_SIZE from the environment and initialises the process group itself).

Exact comparison with one process: the per-rank batch is half the single-process batch, all videos have the
same length (no padding, which would leak into valid frames, a published quirk), dropout is disabled, BatchNorm uses its
running statistics (``model.freeze_bn``: batch statistics are per process in DDP unless SyncBatchNorm, which
needs GPUs) and the ARIS terms are off (they couple all segments of a batch, so they do not decompose over
processes; they are off anyway without text inputs). Then the mean of the per-rank losses equals the
single-process loss, so the averaged gradients — and the Adam updates — agree up to float summation order.
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from train_helpers import tiny_overrides
from trgnet_fast.training import Trainer, load_checkpoint, load_config

EXACT = ["model.dropout=false", "model.freeze_bn=true", "data.augment=false", "train.max_steps_per_epoch=2"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, cfg, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    summary = trainer.fit()
    flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    torch.save({"flat": flat, "gathered": gathered, "summary": summary},
               os.path.join(result_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_run(equal_length_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    cfg = load_config("synthetic", tiny_overrides(equal_length_data, out, epochs=2, extra=EXACT))
    # batch per process = 2 → combined batch 4
    mp.spawn(_worker, args=(2, _free_port(), cfg, out), nprocs=2, join=True)
    return out, [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2)]


def test_ddp_parameters_identical_across_ranks(ddp_run):
    out, (r0, r1) = ddp_run
    assert torch.equal(r0["gathered"][0], r0["gathered"][1])
    assert torch.equal(r0["flat"], r1["flat"])
    # rank 0 alone wrote the logs and checkpoints
    ck = load_checkpoint(os.path.join(out, "last.pt"))
    assert ck["epoch"] == 2 and ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert [r["epoch"] for r in ck["history"]] == [1, 2]


@pytest.mark.filterwarnings("ignore:no text inputs")  # the tiny config trains without the ARIS text terms
def test_ddp_equals_single_process_with_combined_batch(ddp_run, equal_length_data, tmp_path):
    out, (r0, _) = ddp_run
    cfg = load_config("synthetic", tiny_overrides(equal_length_data, str(tmp_path), epochs=2,
                                                  extra=EXACT + ["train.batch_size=4"]))
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    summary = trainer.fit()
    flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    # measured: max |Δ| ≈ 2e-5 after 2 Adam steps of lr 3e-3 (Adam's g/√v amplifies summation-order
    # differences of tiny gradients); with batch-statistics BatchNorm (freeze_bn off) it is ≈ 1e-2
    assert torch.allclose(flat, r0["flat"], rtol=1e-4, atol=2e-4), (flat - r0["flat"]).abs().max()
    # the losses logged (means over all processes) agree too, and the validation metrics, computed on
    # disjoint shares of the validation videos and all-reduced, count every video once
    for key in ("train_total", "train_ce", "train_gstmse", "train_boundary"):
        assert summary[key] == pytest.approx(r0["summary"][key], rel=1e-4), key
    assert r0["summary"]["val_n_videos"] == summary["val_n_videos"] == 2
    assert r0["summary"]["val_n_frames"] == summary["val_n_frames"]


@pytest.mark.parametrize("name", ["meta", "mps", "gpu", "cuda:x"])
def test_resolve_device_refuses_what_cannot_train(name):
    from trgnet_fast.training.distributed import resolve_device
    with pytest.raises(ValueError, match=rf"device: expected auto, cpu, cuda or cuda:N, got '{name}'"):
        resolve_device(name)


def test_resolve_device_cpu_and_auto():
    from trgnet_fast.training.distributed import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
