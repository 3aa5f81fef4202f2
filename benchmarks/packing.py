"""Packed vs padded batches: the frames an epoch stores and computes, and the CPU training-step time.

    python benchmarks/packing.py --out DIR                          # counts + step times at B=8, ~5 min on 2 cores
    python benchmarks/packing.py --steps 3 --time-batch-size 4 --threads 2 --out DIR
    python benchmarks/packing.py --quick --out DIR                  # smoke test: tiny sizes, seconds

For the issue "no compute on padding" (docs/training.md#packed-batches). Padded = the published loader: a shuffled
order (``DistributedSampler``, seed + epoch), batches of B videos, drop_last, ``collate`` pads each batch to its
longest video (S · T_max frames stored and computed). Packed = ``FrameBudgetBatchSampler`` with the trainer's
default budget, B × the mean length (``training.data.frame_budget``), same seed: whole videos concatenated along
time, no padded frame.

Part 1, frames per epoch (exact, no model), for three length distributions:

* ``pku``: PKU-MMD phase 1 as published in total — 1,076 videos, 5,312,580 frames (mean 4,940; 30 fps, 3-4 min
  videos). Per-video lengths are not published, so they are drawn from a lognormal with that mean and a
  coefficient of variation ``--cv``, clipped to ≥ 2 frames and rounded (an assumption, stated in the report);
* ``synthetic``: the built-in synthetic dataset's training lengths (config DEFAULTS data.synthetic, drawn as
  ``make_synthetic`` draws them);
* ``synthetic-pku-shape``: the ``pku`` shape scaled to the synthetic mean.

Per epoch (``--epochs``, epochs 0, 1, … of seed ``--seed``): padded frames stored, real frames, padding share
= 1 − real / stored, steps; packed frames (= the sum of the lengths), steps, mean pack fill (frames / budget),
most videos in a pack.

Part 2, CPU step time of the published PKU model (``load_config("PKU-subject")``, ``--backend``, default "cuda":
on a CPU the extension's native C++ kernels) on ``synthetic-pku-shape`` lengths: ``--steps`` timed steps (after one
warm-up) of the trainer's ``TrainStep`` (model + ``TRGNetLoss``) → backward → Adam, in three modes on the same
videos each step: ``padded-published`` (mask_mode published, ``collate``), ``padded-correct`` (mask_mode correct,
``collate``), ``packed`` (mask_mode correct, ``pack_collate``). The modes run interleaved (order rotated every
step), so load changes on a shared machine hit them alike. Features, labels, action embeddings (K, 768) and TAG
(K, K) are random (timing only; no data set or text encoder needed). Collating is not timed (the loader's workers
do it).

Markdown to stdout; ``--out DIR`` also writes packing.md and packing.json (every number, the arguments and the
machine). Progress on stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.data import BatchSampler
from torch.utils.data.distributed import DistributedSampler

from trgnet_fast.backend import backend_status
from trgnet_fast.data import (FrameBudgetBatchSampler, batch_frames, boundary_from_labels, collate,
                              pack_collate)
from trgnet_fast.losses import TRGNetLoss, boundary_pos_weight
from trgnet_fast.model import default_config
from trgnet_fast.skeletons import num_joints
from trgnet_fast.training.config import DEFAULTS, load_config
from trgnet_fast.training.data import frame_budget
from trgnet_fast.training.text import PUBLISHED_TEXT_DIM
from trgnet_fast.training.trainer import TrainStep, build_model, model_kwargs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, as benchmarks/run.py imports it

from bench.anatomy_blocks import random_text_inputs  # noqa: E402
from bench.environment import describe  # noqa: E402

DATASET = "PKU-subject"
# PKU-MMD phase 1 (Liu et al. 2017): 1,076 videos, 5,312,580 frames in all
PKU_VIDEOS = 1076
PKU_FRAMES = 5_312_580
MODES = {"padded-published": "published", "padded-correct": "correct", "packed": "correct"}  # mode → mask_mode
# --quick: a shallow, narrow model of the same structure (every block kept), so the smoke test runs in seconds
QUICK_MODEL = {"n_features": 16, "n_stages": 2, "n_layers": 3, "n_refine_layers": 2, "n_stages_asb": 2,
               "n_stages_brb": 2, "SFI_layer": [1, 2]}
QUICK_PKU_VIDEOS = 64


def progress(msg: str) -> None:
    print(f"[packing] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ length draws
def lognormal_lengths(n: int, mean: float, cv: float, seed: int) -> list[int]:
    """``n`` frame counts from a lognormal of the given mean and coefficient of variation, the draws scaled so that
    their mean is exactly ``mean`` (the total then is the published one, not one off by the sampling error), rounded
    and clipped to ≥ 2 (the shortest video the readers take)."""
    sigma2 = math.log1p(cv ** 2)
    draws = np.random.default_rng(seed).lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return [int(v) for v in np.maximum(np.rint(draws * (mean / draws.mean())), 2)]


def synthetic_lengths(settings: dict) -> list[int]:
    """The training videos' frame counts of ``make_synthetic(**settings)`` without generating the videos: each
    video's generator (spawned from the seed, train split first) draws its length first, U{min..max}."""
    train_seq = np.random.SeedSequence(settings["seed"]).spawn(3)[0]
    return [int(np.random.default_rng(video_seq).integers(settings["min_frames"], settings["max_frames"] + 1))
            for video_seq in train_seq.spawn(settings["n_train"])]


def length_stats(lengths: list[int]) -> dict:
    mean = statistics.fmean(lengths)
    return {"videos": len(lengths), "frames": sum(lengths), "mean": round(mean, 1),
            "cv": round(statistics.pstdev(lengths) / mean, 3), "min": min(lengths),
            "median": statistics.median(lengths), "max": max(lengths)}


def distributions(args) -> dict[str, dict]:
    """name → {"lengths", "source"} of the three length distributions of part 1."""
    synthetic = DEFAULTS["data"]["synthetic"]
    syn = synthetic_lengths(synthetic)
    syn_mean = statistics.fmean(syn)
    pku_videos = QUICK_PKU_VIDEOS if args.quick else PKU_VIDEOS
    return {
        "pku": {"lengths": lognormal_lengths(pku_videos, PKU_FRAMES / PKU_VIDEOS, args.cv, args.seed),
                "source": f"PKU-MMD phase 1 as published in total ({PKU_VIDEOS:,} videos, {PKU_FRAMES:,} frames, mean "
                          f"{PKU_FRAMES / PKU_VIDEOS:,.0f}); per-video lengths unpublished: ASSUMED lognormal, "
                          f"cv {args.cv}, {pku_videos} videos drawn with seed {args.seed}"},
        "synthetic": {"lengths": syn,
                      "source": f"the built-in synthetic dataset's {synthetic['n_train']} training videos (config "
                                f"data.synthetic: U{{{synthetic['min_frames']}..{synthetic['max_frames']}}}, "
                                f"seed {synthetic['seed']})"},
        "synthetic-pku-shape": {"lengths": lognormal_lengths(synthetic["n_train"], syn_mean, args.cv, args.seed),
                                "source": f"{synthetic['n_train']} videos, the pku lognormal (cv {args.cv}) "
                                          f"scaled to the synthetic mean {syn_mean:.0f}"},
    }


# ------------------------------------------------------------------------------------------------ epoch counts
def padded_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The published training loader's batches of one epoch (``training.data.train_loader`` without packing, one
    process): ``DistributedSampler``'s shuffled order, batches of ``batch_size``, the last partial one dropped."""
    sampler = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(BatchSampler(sampler, batch_size, drop_last=batch_size > 1))


def epoch_counts(lengths: list[int], batch_size: int, seed: int, epoch: int) -> dict:
    """Frames, steps and padding of one epoch over videos of ``lengths``, padded (batches of ``batch_size``) and
    packed (``FrameBudgetBatchSampler`` with budget ``batch_size`` × the mean length)."""
    result = {}
    budget = frame_budget({"data": {"frame_budget": None}, "train": {"batch_size": batch_size}}, lengths)
    sampler = FrameBudgetBatchSampler(lengths, budget, seed=seed)
    sampler.set_epoch(epoch)
    for mode, batches, packed in (("padded", padded_batches(len(lengths), batch_size, seed, epoch), False),
                                  ("packed", list(sampler), True)):
        stored = batch_frames(batches, lengths, packed)
        real = sum(lengths[i] for batch in batches for i in batch)
        result[mode] = {"steps": len(batches), "videos": sum(len(b) for b in batches), "frames": stored,
                        "real_frames": real, "padding_share": 1 - real / stored,
                        "max_videos_per_batch": max(len(b) for b in batches)}
    result["packed"].update(frame_budget=budget, mean_fill=result["packed"]["frames"] / (budget * len(sampler)))
    return result


def count_distribution(lengths: list[int], batch_size: int, seed: int, epochs: int) -> dict:
    """:func:`epoch_counts` of epochs 0 … epochs-1 and their summary (means; min and max of the padding share)."""
    per_epoch = [epoch_counts(lengths, batch_size, seed, e) for e in range(epochs)]
    summary = {}
    for mode in ("padded", "packed"):
        rows = [e[mode] for e in per_epoch]
        shares = [r["padding_share"] for r in rows]
        summary[mode] = {key: statistics.fmean(r[key] for r in rows)
                         for key in ("steps", "videos", "frames", "real_frames")}
        summary[mode].update(padding_share=statistics.fmean(shares), padding_share_min=min(shares),
                             padding_share_max=max(shares),
                             max_videos_per_batch=max(r["max_videos_per_batch"] for r in rows))
    summary["packed"].update(frame_budget=per_epoch[0]["packed"]["frame_budget"],
                             mean_fill=statistics.fmean(e["packed"]["mean_fill"] for e in per_epoch))
    # computed frames per real frame trained on: padded also drops the last partial batch
    summary["padded_frames_per_real_frame"] = summary["padded"]["frames"] / summary["padded"]["real_frames"]
    return {"lengths": length_stats(lengths), "batch_size": batch_size, "epochs": per_epoch, "summary": summary}


# ------------------------------------------------------------------------------------------------ step timing
def random_items(lengths: list[int], channels: int, joints: int, n_classes: int, gen: torch.Generator) -> list[dict]:
    """Dataset items (as the readers return them) of the given lengths (each ≥ 2): random features,
    piecewise-constant random labels (~1 segment per 150 frames, like PKU's ~35 per 5,000; at least 2, each of
    another class than the one before) and their boundary target."""
    items = []
    for i, length in enumerate(lengths):
        n_seg = min(max(2, length // 150), length)
        cuts = torch.randperm(length - 1, generator=gen)[: n_seg - 1] + 1
        bounds = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([length])])
        steps = torch.randint(1, n_classes, (n_seg,), generator=gen)  # class changes at every cut
        classes = (torch.randint(0, n_classes, (1,), generator=gen) + steps.cumsum(0)) % n_classes
        labels = torch.repeat_interleave(classes, bounds.diff())
        items.append({"feature": torch.randn((channels, joints, length), generator=gen), "label": labels,
                      "boundary": torch.from_numpy(boundary_from_labels(labels.numpy())), "name": f"video_{i}"})
    return items


def resolve_backend(requested: str) -> tuple[str, str | None]:
    """(backend to time, note): ``requested``, or "torch" with the reason when it is not usable on the CPU."""
    usable, why = backend_status("cpu")[requested]
    if usable:
        return requested, None
    note = f"backend {requested!r} unusable here ({why}): timed with 'torch' instead"
    progress(note)
    return "torch", note


class ModeStep:
    """One mode's trainer objects, built as ``Trainer.setup`` builds them (same seed, so the same initial weights
    in every mode): the model, ``TRGNetLoss`` with every term, Adam and ``TrainStep``."""

    def __init__(self, mask_mode: str, backend: str, text: tuple, pos_weight: float, seed: int, quick: bool):
        overrides = [f"model.backend={backend}", f"model.mask_mode={mask_mode}"]
        overrides += [f"model.{k}={json.dumps(v)}" for k, v in (QUICK_MODEL if quick else {}).items()]
        cfg = load_config(DATASET, overrides)
        torch.manual_seed(seed)
        self.model = build_model(model_kwargs(cfg, text[0].shape[0], text[0].shape[1]), cfg["model"]["dropout"])
        lc = cfg["loss"]
        self.criterion = TRGNetLoss(*text, pos_weight, lambda_b=lc["lambda_b"], gstmse_weight=lc["gstmse_weight"],
                                    aris_abs_weight=lc["aris_abs_weight"], aris_rel_weight=lc["aris_rel_weight"],
                                    published_quirks=lc["published_quirks"], backend=backend)
        o = cfg["optim"]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                          weight_decay=0.0)
        self.step = TrainStep(self.model, self.criterion, cfg["train"]["bf16"])

    def run(self, batch: dict, joint_graph: torch.Tensor) -> float:
        """One training step on a collated batch (padded or packed); its wall seconds."""
        start = time.perf_counter()
        self.step.train()
        losses, _ = self.step(batch["x"], batch["labels"], batch["boundary"], batch["mask"], joint_graph,
                              max_segments=batch["max_segments"], targets=batch["loss_targets"],
                              packed=batch.get("packed"), loss_mask=batch.get("loss_mask"))
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        seconds = time.perf_counter() - start
        total = float(losses["total"].detach())  # after the clock: a timed step never waits on a read
        if not math.isfinite(total):
            raise FloatingPointError(f"non-finite loss {total} in a timed step")
        return seconds


def time_steps(args) -> dict:
    """Part 2: per mode the step times and frames of ``args.steps`` timed steps on the same videos."""
    backend, note = resolve_backend(args.backend)
    cfg = default_config(DATASET)
    n_classes, channels, joints = cfg["n_classes"], cfg["in_channel"], num_joints(DATASET)
    synthetic = DEFAULTS["data"]["synthetic"]
    mean = args.time_mean_length or statistics.fmean(synthetic_lengths(synthetic))
    n_batches = 1 + args.steps  # the first one is the warm-up
    lengths = lognormal_lengths(n_batches * args.time_batch_size, mean, args.cv, args.seed + 1)
    gen = torch.Generator().manual_seed(args.seed)
    items = random_items(lengths, channels, joints, n_classes, gen)
    text = random_text_inputs(n_classes, PUBLISHED_TEXT_DIM, args.seed)
    graph = torch.rand((joints, joints), generator=gen)
    joint_graph = ((graph + graph.T) / 2).fill_diagonal_(1.0)
    # the trainer counts pos_weight on the training set's boundaries: here, on every video of the run
    pos_weight = boundary_pos_weight([item["boundary"] for item in items])
    progress(f"building the three models (backend {backend}{', quick model' if args.quick else ''})")
    modes = {mode: ModeStep(mask_mode, backend, text, pos_weight, args.seed, args.quick)
             for mode, mask_mode in MODES.items()}
    builder = modes["packed"].criterion.target_builder()  # the same loss settings in every mode
    batches = []
    for b in range(n_batches):
        videos = items[b * args.time_batch_size:(b + 1) * args.time_batch_size]
        padded, packed = collate(videos, builder), pack_collate(videos, builder)
        batches.append({"padded-published": padded, "padded-correct": padded, "packed": packed})
    times = {mode: [] for mode in MODES}
    names = list(MODES)
    for b, batch in enumerate(batches):
        order = names[b % len(names):] + names[:b % len(names)]
        seconds = {mode: modes[mode].run(batch[mode], joint_graph) for mode in order}
        if b:  # batch 0 is the warm-up
            for mode in names:
                times[mode].append(seconds[mode])
        progress(f"{f'step {b}/{args.steps}' if b else 'warm-up'}: "
                 + ", ".join(f"{mode} {seconds[mode]:.2f} s" for mode in names))
    timed = batches[1:]
    real = [sum(batch["packed"]["packed"].lengths) for batch in timed]
    results = {}
    for mode in MODES:
        frames = [int(batch[mode]["x"].shape[0] * batch[mode]["x"].shape[-1]) for batch in timed]
        median = statistics.median(times[mode])
        quartiles = statistics.quantiles(times[mode], n=4) if len(times[mode]) > 1 else [median] * 3
        results[mode] = {"mask_mode": MODES[mode], "times_s": times[mode], "median_s": median,
                         "min_s": min(times[mode]), "max_s": max(times[mode]), "p25_s": quartiles[0],
                         "p75_s": quartiles[2], "frames_per_step": frames,
                         "mean_frames_per_step": statistics.fmean(frames),
                         "mean_real_frames_per_step": statistics.fmean(real),
                         "real_frames_per_s": statistics.fmean(real) / median}
    packed = results["packed"]["median_s"]
    return {"backend": backend, "backend_note": note, "batch_size": args.time_batch_size,
            "lengths": length_stats(lengths[args.time_batch_size:]), "mean_length_drawn_from": round(mean, 1),
            "model": "quick (QUICK_MODEL overrides)" if args.quick else "published PKU-subject config",
            "model_overrides": QUICK_MODEL if args.quick else {}, "text": f"random (K={n_classes}, "
            f"D={PUBLISHED_TEXT_DIM}) action embeddings and (K, K) TAG", "torch_threads": torch.get_num_threads(),
            "modes": results,
            "packed_speedup": {mode: results[mode]["median_s"] / packed for mode in MODES if mode != "packed"}}


# ------------------------------------------------------------------------------------------------ report
def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def counts_tables(counts: dict, args) -> list[str]:
    lengths = table(["distribution", "videos", "mean", "cv", "min", "median", "max", "source"],
                    [[name, c["lengths"]["videos"], c["lengths"]["mean"], c["lengths"]["cv"], c["lengths"]["min"],
                      c["lengths"]["median"], c["lengths"]["max"], c["source"]] for name, c in counts.items()])
    rows = []
    for name, c in counts.items():
        pad, pack = c["summary"]["padded"], c["summary"]["packed"]
        rows.append([name, f"{pad['steps']:.1f}", f"{pad['frames']:,.0f}", f"{pad['real_frames']:,.0f}",
                     f"{pct(pad['padding_share'])} ({pct(pad['padding_share_min'])}–{pct(pad['padding_share_max'])})",
                     f"{pack['frame_budget']:,}", f"{pack['steps']:.1f}", f"{pack['frames']:,.0f}",
                     pct(pack["padding_share"]), pct(pack["mean_fill"]), pack["max_videos_per_batch"],
                     f"{c['summary']['padded_frames_per_real_frame']:.3f}"])
    epochs = table(["distribution", "padded steps", "padded frames computed", "padded real frames",
                    "padding share mean (min–max)", "packed budget", "packed steps", "packed frames computed",
                    "packed padding share", "mean pack fill", "max videos per pack",
                    "padded computed / real frame"], rows)
    return ["## Frames per epoch (exact, no model)", "",
            f"B = {args.batch_size}; packed budget = B × mean length; means over {args.epochs} epochs (seed "
            f"{args.seed}, epochs 0–{args.epochs - 1}). Padded drops the last partial batch (published "
            "drop_last), so it trains on fewer real frames than packed, which keeps every video.", "",
            *lengths, "", *epochs, ""]


def timing_table(timing: dict) -> list[str]:
    rows = []
    for mode, r in timing["modes"].items():
        speedup = f"{r['median_s'] / timing['modes']['packed']['median_s']:.2f}×" if mode != "packed" else "–"
        rows.append([mode, r["mask_mode"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}–{r['max_s']:.3f}",
                     f"{r['p25_s']:.3f}–{r['p75_s']:.3f}", f"{r['mean_frames_per_step']:,.0f}",
                     f"{r['mean_real_frames_per_step']:,.0f}", f"{r['real_frames_per_s']:,.0f}", speedup])
    lengths = timing["lengths"]
    lines = ["## CPU training-step time", "",
             f"{timing['model']}, backend {timing['backend']}, {timing['torch_threads']} torch threads; "
             f"B = {timing['batch_size']} videos per step, lengths lognormal (mean {timing['mean_length_drawn_from']}, "
             f"cv as above) — timed videos: mean {lengths['mean']}, min {lengths['min']}, median "
             f"{lengths['median']}, max {lengths['max']}. Step = TrainStep (model + TRGNetLoss, every term) → "
             f"backward → Adam; {len(timing['modes']['packed']['times_s'])} timed steps per mode after 1 warm-up, "
             f"modes interleaved, the same videos in every mode. Text inputs: {timing['text']}. "
             "Real frames/s = mean real frames per step / median step time.", ""]
    if timing["backend_note"]:
        lines += [f"Note: {timing['backend_note']}.", ""]
    return lines + table(["mode", "mask_mode", "median s", "min–max s", "IQR s", "frames computed / step",
                          "real frames / step", "real frames / s", "packed speed-up"], rows) + [""]


def markdown(counts: dict, timing: dict | None, env: dict, args, seconds: float) -> str:
    commit = env["git_commit"].split()[0][:10] + (" + local changes" if env.get("git_dirty_files") else "")
    load = " / ".join(f"{x:.2f}" for x in env["loadavg_start"] or [])  # busy CPU: noisy step times
    lines = ["# Packed vs padded batches: frames per epoch and CPU step time", "",
             f"{env['date_utc']}, torch {env['torch']}, Python {env['python']}, CPU {env['cpu']} "
             f"({env['cpu_count']} cores, load average {load}), torch threads "
             f"{env['torch_threads']}, commit {commit}. Report time {seconds:.0f} s."
             + (" --quick: tiny sizes and model, a smoke test, not a measurement." if args.quick else ""), "",
             *counts_tables(counts, args)]
    lines += timing_table(timing) if timing else ["(step timing skipped: --no-timing)", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=8, help="B: videos per padded batch (published: 8); the "
                   "packed budget is B × the mean length")
    p.add_argument("--epochs", type=int, default=5, help="epochs (shuffles) counted per distribution")
    p.add_argument("--cv", type=float, default=0.25, help="coefficient of variation of the assumed lognormal "
                   "PKU-MMD lengths (their per-video lengths are not published)")
    p.add_argument("--seed", type=int, default=0, help="seed of the length draws, the loaders and the timed inputs")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per mode (after 1 warm-up)")
    p.add_argument("--time-batch-size", type=int, default=None, help="videos per timed step (default: --batch-size)")
    p.add_argument("--time-mean-length", type=float, default=None,
                   help="mean length of the timed videos (default: the synthetic training videos' mean, ~300)")
    p.add_argument("--backend", default="cuda", choices=("torch", "cuda", "triton"),
                   help="model backend of the timed steps (cuda on a CPU: the native C++ kernels; falls back to "
                        "torch when unusable)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--no-timing", action="store_true", help="frames per epoch only")
    p.add_argument("--quick", action="store_true", help="smoke test: 64 PKU-like videos, 2 epochs, a tiny model, "
                   "2 videos of ~40 frames, 1 timed step")
    p.add_argument("--out", default=None, help="directory for packing.md and packing.json")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.steps = 2, 1
        args.time_batch_size, args.time_mean_length = args.time_batch_size or 2, args.time_mean_length or 40
    args.time_batch_size = args.time_batch_size or args.batch_size
    for name in ("batch_size", "epochs", "steps", "time_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    counts = {}
    for name, dist in distributions(args).items():
        progress(f"counting {name}: {len(dist['lengths'])} videos, {args.epochs} epochs")
        counts[name] = {**count_distribution(dist["lengths"], args.batch_size, args.seed, args.epochs),
                        "source": dist["source"]}
    timing = None if args.no_timing else time_steps(args)
    seconds = time.perf_counter() - start
    env = describe(torch.device("cpu"))
    text = markdown(counts, timing, env, args, seconds)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "packing.md"), "w", encoding="utf-8") as f:
            f.write(text)
        data = {"meta": {"env": env, "args": vars(args), "seconds": round(seconds, 1)},
                "counts": counts, "timing": timing}
        with open(os.path.join(args.out, "packing.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
        progress(f"wrote {args.out}/packing.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
