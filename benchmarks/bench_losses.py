"""Time TRGNetLoss (forward + backward) against the model's training step at the same size.

    python benchmarks/bench_losses.py                       # CPU, --small size (N=2, T=512)
    python benchmarks/bench_losses.py --device cuda --N 8 --T 6000
    python benchmarks/bench_losses.py --N 8 --T 6000 --loss-only   # CPU: the model step takes minutes
    python benchmarks/bench_losses.py --backends torch,cuda,triton   # the per-frame terms' backends side by side

The model step is the reference TRGNet (published PKU config) zero_grad → forward (train mode) →
benchmarks' stand-in loss → backward → Adam.step (see workload.train_loss). The loss step is
TRGNetLoss.forward + backward on leaf tensors shaped like the model's train-mode outputs, with padded
random labels (~1 segment per 150 frames, like PKU). Target: loss ≤ 5 % of the model step.
``--backends``: the loss is timed once per backend of its terms (``TRGNetLoss(backend=...)``: "torch" its PyTorch
terms, "cuda" / "triton" the fused frame_losses and aris_losses ops, docs/kernels.md#frame_losses,
docs/kernels.md#aris_losses), in turns (default: torch and each fused backend usable on the device, Triton only on a
GPU).
Prints median and spread (min, max, IQR) per timing, the ratio, device and versions.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workload  # noqa: E402

from trgnet_fast.backend import backend_status  # noqa: E402
from trgnet_fast.data import segment_capacity  # noqa: E402
from trgnet_fast.losses import TRGNetLoss, boundary_pos_weight  # noqa: E402
from trgnet_fast.training.transfer import to_device  # noqa: E402


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def summary(name: str, times: list[float]) -> str:
    ms = sorted(t * 1e3 for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [ms[0], statistics.median(ms), ms[-1]]
    return (f"{name:<28} median {statistics.median(ms):10.3f} ms   min {ms[0]:.3f}  max {ms[-1]:.3f}  "
            f"IQR {q[2] - q[0]:.3f}  (n={len(ms)})")


def make_loss_inputs(inputs, n_classes, text_dim, device, seed):
    g = torch.Generator().manual_seed(seed + 1)
    n, t = inputs["labels"].shape

    def leaf(*shape):
        return torch.randn(*shape, generator=g).to(device).requires_grad_(True)

    outputs = ([leaf(n, n_classes, t), leaf(n, n_classes, t)],
               [leaf(n, 1, t), leaf(n, 1, t), leaf(n, 1, t)],
               [leaf(n, text_dim, t), leaf(n, text_dim, t)],
               torch.full((1,), 2.659, device=device, requires_grad=True))
    emb = torch.randn(n_classes, text_dim, generator=g)
    d = torch.cdist(emb, emb)
    tag = 1 - d / d.max()
    return outputs, emb.to(device), tag.to(device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--N", type=int, default=None)
    ap.add_argument("--T", type=int, default=None)
    ap.add_argument("--small", action="store_true", help="N=2, T=512 (default on CPU when N/T not given)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=None, help="default 20 on GPU, 5 on CPU")
    ap.add_argument("--loss-only", action="store_true", help="skip the model step (no ratio)")
    ap.add_argument("--corrected", action="store_true",
                    help="published_quirks=False (class-axis GS-TMSE, every segment); default: the published loss")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", type=lambda v: [b.strip() for b in v.split(",") if b.strip()], default=None,
                    help="backends of the loss's per-frame terms, comma-separated (default: torch + the usable fused "
                         "ones; Triton only on a GPU)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.small or (args.N is None and args.T is None and device.type == "cpu"):
        n, t = args.N or 2, args.T or 512
    else:
        n, t = args.N or 8, args.T or 6000
    repeat = args.repeat or (20 if device.type == "cuda" else 5)

    cfg = workload.model_config()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"N={n} T={t} K={cfg['n_classes']} dataset={workload.DATASET} published_quirks={not args.corrected}")

    inputs = workload.make_model_inputs(n, t, device, args.seed)
    outputs, emb, tag = make_loss_inputs(inputs, cfg["n_classes"], 768, device, args.seed)
    pw = boundary_pos_weight([inputs["boundary"][i, 0, :int(inputs["mask"][i].sum())].cpu()
                              for i in range(n)])
    backends = args.backends or default_backends(device)
    losses = {b: TRGNetLoss(emb, tag, pw, published_quirks=not args.corrected, backend=b).to(device)
              for b in backends}
    loss_fn = losses[backends[0]]
    leaves = [z for group in outputs[:3] for z in group] + [outputs[3]]

    # the training path: the labels-only part and the GS-TMSE pair weights of the (augmented) x built by the collate
    # on the CPU, moved with the batch, so the loss takes no x (docs/model.md#loss-targets); "own targets": the loss
    # builds them on the device (a host sync for the segments)
    labels_cpu = inputs["labels"].cpu()
    targets = to_device(loss_fn.target_builder()(labels_cpu, inputs["mask"].cpu(), segment_capacity(labels_cpu),
                                                 inputs["x"].cpu()), device)

    def loss_step(given=targets, fn=loss_fn):
        for z in leaves:
            z.grad = None
        x = inputs["x"] if given is None else None
        out = fn(outputs, x, inputs["labels"], inputs["boundary"], inputs["mask"], targets=given)
        out["total"].backward()

    # the backends in turns, one timing each per round, so that a change of machine load hits them alike
    times = {b: [] for b in backends}
    peaks = {}
    for b in backends:
        timeit(lambda fn=losses[b]: loss_step(fn=fn), device, args.warmup, 0)
    for _ in range(repeat):
        for b in backends:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[b] += timeit(lambda fn=losses[b]: loss_step(fn=fn), device, 0, 1)
            if device.type == "cuda":
                peaks[b] = max(peaks.get(b, 0), torch.cuda.max_memory_allocated(device))
    for b in backends:
        peak = f"   peak {peaks[b] / 2**30:.2f} GiB (incl. inputs)" if b in peaks else ""
        print(summary(f"TRGNetLoss fwd+bwd, {b}", times[b]) + peak)
    loss_times = times[backends[0]]
    print(summary(f"TRGNetLoss fwd+bwd, {backends[0]}, own targets",
                  timeit(lambda: loss_step(None), device, args.warmup, repeat)))
    if args.loss_only:
        return

    model = workload.build_model(device, None, args.seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def model_step():
        opt.zero_grad(set_to_none=True)
        out = model(inputs["x"], inputs["mask"], inputs["joint_graph"])
        workload.train_loss(out, inputs["labels"], inputs["boundary"], inputs["mask"]).backward()
        opt.step()

    model_times = timeit(model_step, device, min(args.warmup, 1) if device.type == "cpu" else args.warmup,
                         repeat)
    print(summary("model step fwd+bwd+Adam", model_times))
    ratio = statistics.median(loss_times) / statistics.median(model_times)
    print(f"ratio loss / model step: {100 * ratio:.2f} %  (target <= 5 %)")


def default_backends(device) -> list[str]:
    """torch, then the fused backends usable on ``device`` (Triton's CPU interpreter is too slow to time)."""
    status = backend_status(device.type)
    fused = [b for b in ("cuda", "triton") if status[b][0] and not (b == "triton" and device.type == "cpu")]
    return ["torch", *fused]


if __name__ == "__main__":
    main()
