"""Implementations of the ``trgnet`` sub-commands train, eval, predict, average-splits, make-synthetic,
convert-pku and viz-graphs (the parser lives in ``trgnet_fast.cli``)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import torch


def _log(msg: str) -> None:
    print(msg, flush=True)


def _config_from_args(args):
    from trgnet_fast.training.config import load_config
    overrides = list(args.set or [])
    if getattr(args, "data", None):
        overrides.append(f"data.dir={args.data}")
    if getattr(args, "out", None):
        overrides.append(f"output_dir={args.out}")
    if getattr(args, "epochs", None) is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if getattr(args, "device", None):
        overrides.append(f"train.device={args.device}")
    return load_config(args.config, overrides)


def train(args) -> int:
    from trgnet_fast.training.trainer import Trainer
    from trgnet_fast.training.distributed import cleanup
    cfg = _config_from_args(args)
    trainer = Trainer(cfg, resume=args.resume, log=_log, progress=not args.no_progress)
    try:
        trainer.fit()
        if trainer.is_main:
            _log(f"done: checkpoints and logs in {trainer.out_dir}")
            if args.test and cfg["data"]["test_csv"]:
                _evaluate_checkpoint(os.path.join(trainer.out_dir, "best.pt"), "test", None,
                                     os.path.join(trainer.out_dir, "eval_test"), trainer.device)
    finally:
        cleanup(trainer.info)
    return 0


def load_model(checkpoint: str, device):
    """(model in eval mode, checkpoint dict) from a trainer checkpoint."""
    from trgnet_fast.training.checkpoint import load_checkpoint
    from trgnet_fast.training.trainer import build_model
    state = load_checkpoint(checkpoint)
    model = build_model(state["model_kwargs"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def _checkpoint_data(state, data_dir_override) -> tuple[dict, str]:
    """(a copy of the checkpoint's config with data.dir set, dataset root). The root is ``--data`` if given,
    else the absolute root the trainer recorded (the config's data.dir may be relative to the directory the
    run was started from), else the config's."""
    from trgnet_fast.training.data import data_dir
    cfg = dict(state["config"])
    cfg["data"] = dict(cfg["data"])
    cfg["data"]["dir"] = data_dir_override or state.get("data_root") or data_dir(cfg)
    return cfg, cfg["data"]["dir"]


def _split_dataset(cfg: dict, root: str, split: str, num_classes: int):
    """The ``split`` ("train" | "val" | "test") of a run's data."""
    from trgnet_fast.training.data import build_splits, make_dataset
    if split == "val":
        return build_splits(cfg, root, num_classes)["val"]
    return make_dataset(cfg, split, root, num_classes)


def _eval_dataset(state, split: str, data_dir_override):
    cfg, root = _checkpoint_data(state, data_dir_override)
    dataset = _split_dataset(cfg, root, split, len(state["class_names"]))
    if split == "val" and len(dataset) == 0:
        raise ValueError(f"--split val: the run's validation split is empty (no data.val_csv, and the "
                         f"training list is shorter than data.val_every={cfg['data']['val_every']}); "
                         f"use --split test or --split train")
    return cfg, dataset


def _evaluate_checkpoint(checkpoint, split, data_dir_override, out_dir, device, on_video=None, quiet=False,
                         f1_end=None, cuda_graphs=False):
    from trgnet_fast.training.cuda_graphs import check_graphable
    from trgnet_fast.training.data import eval_loader, length_buckets
    from trgnet_fast.training.evaluate import graphed_forward, run_inference
    model, state = load_model(checkpoint, device)
    cfg, dataset = _eval_dataset(state, split, data_dir_override)
    # f1_end (--f1-end) overrides the checkpoint's eval.f1_end; checkpoints written before that key existed
    # were evaluated with the published end; the same for --cuda-graphs and eval.cuda_graphs
    cfg["eval"] = dict(cfg["eval"], f1_end=f1_end or cfg["eval"].get("f1_end", "published"),
                       cuda_graphs=cuda_graphs or cfg["eval"].get("cuda_graphs", False))
    graphed = buckets = None
    if cfg["eval"]["cuda_graphs"]:
        kwargs = state["model_kwargs"]
        check_graphable("--cuda-graphs" if cuda_graphs else "config key 'eval.cuda_graphs'", device,
                        kwargs.get("backend"), unvalidated_mask_mode=kwargs.get("mask_mode", "published"))
        # padded batches, one video each, padded to length buckets (a packed run's videos give the same outputs)
        cfg["data"] = dict(cfg["data"], packing=False, length_buckets=cfg["data"].get("length_buckets"))
        graphed = graphed_forward(model, state["joint_graph"].to(device), device,
                                  torch.bfloat16 if cfg["train"]["bf16"] else None)
        buckets = length_buckets(cfg, "eval")
    loader = eval_loader(dataset, cfg)
    metrics = run_inference(model, loader, cfg, state["class_names"], state["joint_graph"], device,
                            on_video=on_video(state) if on_video else None, length_buckets=buckets, graphed=graphed)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = metrics.write_csv(os.path.join(out_dir, f"metrics_{split}.csv"))
    summary = metrics.summary()
    if not quiet:
        _log(format_summary(summary, f"{checkpoint} on {split} ({summary['n_videos']} videos)"))
        _log(f"per-video metrics: {csv_path}")
    return summary, csv_path


def format_summary(summary: dict, title: str = "") -> str:
    keys = [k for k in summary if k.startswith("F1@")] + ["Edit", "Acc"]
    keys += [k for k in ("BoundaryPrecision", "BoundaryRecall", "BoundaryF1") if k in summary]
    head = " | ".join(f"{k:>10}" for k in keys)
    vals = " | ".join(f"{summary[k]:10.2f}" for k in keys)
    return (title + "\n" if title else "") + head + "\n" + vals


def _device(name: str | None) -> torch.device:
    """``--device`` as a torch.device: the forms train.device takes (torch knows more device types, e.g. meta,
    but the model runs on CPU and CUDA only)."""
    from trgnet_fast.training.distributed import resolve_device
    if name is not None and re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", name) is None:
        raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return resolve_device(name or "auto")


def evaluate(args) -> int:
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval_{args.split}")
    _evaluate_checkpoint(args.checkpoint, args.split, args.data, out, _device(args.device), f1_end=args.f1_end,
                         cuda_graphs=args.cuda_graphs)
    return 0


def predict(args) -> int:
    from trgnet_fast.evaluation import plot_barcode, write_predictions

    def on_video(state):
        names = state["class_names"]

        def write(name, pred, gt, logits, boundary):
            write_predictions(os.path.join(args.out, "predictions", name + ".txt"), pred, names)
            if not args.no_plots:
                plot_barcode(os.path.join(args.out, "plots", name + ".png"), gt, {"prediction": pred},
                             num_classes=len(names), class_names=names, boundary=torch.sigmoid(boundary[0]), title=name)
        return write

    summary, csv_path = _evaluate_checkpoint(args.checkpoint, args.split, args.data, args.out,
                                             _device(args.device), on_video=on_video, cuda_graphs=args.cuda_graphs)
    _log(f"predictions (MS-TCN text, one class name per frame): {os.path.join(args.out, 'predictions')}")
    if not args.no_plots:
        _log(f"barcode plots: {os.path.join(args.out, 'plots')}")
    return 0


def average_splits(args) -> int:
    from trgnet_fast.evaluation import average_splits as avg, write_split_average
    mean = write_split_average(args.csv, args.out) if args.out else avg(args.csv)
    _log(format_summary(mean, f"mean over {mean['n_splits']} splits"))
    if args.out:
        _log(f"written: {args.out}")
    return 0


def make_synthetic(args) -> int:
    from trgnet_fast.data import make_synthetic as make
    # each flag's own range is checked by argparse; these two look at two flags together
    if args.n_train + args.n_val + args.n_test == 0:
        raise ValueError("--n-train, --n-val, --n-test: expected at least one video, got 0 in every split")
    if args.min_frames > args.max_frames:
        raise ValueError(f"--min-frames: expected ≤ --max-frames ({args.max_frames}), got {args.min_frames}")
    info = make(args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, seed=args.seed,
                min_frames=args.min_frames, max_frames=args.max_frames)
    _log(f"synthetic dataset ({info['num_classes']} classes, dataset key {info['dataset']}) in {args.out}")
    return 0


def convert_pku(args) -> int:
    from trgnet_fast.data import convert_pku_mmd
    res = convert_pku_mmd(args.skeletons, args.labels, args.out, cross_subject_file=args.cross_subject,
                          class_names=args.class_names, frame_base=args.frame_base)
    _log(f"converted {len(res['videos'])} videos into {args.out}")
    for split, files in res["csv"].items():
        _log(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in files.items()))
    return 0


def _load_video(args, model, info):
    """(feature (C_in, V, T) tensor, labels (T,) np.ndarray or None, name)."""
    from trgnet_fast.data.datasets import load_npy
    from trgnet_fast.data.features import check_num_frames, features_from_array
    if os.path.isfile(args.video):
        name = os.path.splitext(os.path.basename(args.video))[0]
        feat = features_from_array(load_npy(args.video), model.dataset, args.video)
        check_num_frames(feat.shape[-1], args.video)
        labels = _video_labels(args.labels, feat.shape[-1], model.n_classes) if args.labels else None
        return torch.as_tensor(feat, dtype=torch.float32), labels, name
    if args.labels:
        raise ValueError(f"--labels: only for a --video feature file; {args.video!r} is not a file (a video of "
                         "the checkpoint's split brings its own labels)")
    if not info.get("config"):
        raise ValueError(f"--video {args.video!r} is not a file and the checkpoint has no config to find its "
                         "dataset; pass a feature .npy")
    cfg, root = _checkpoint_data(info, args.data)
    ds = _split_dataset(cfg, root, args.split, model.n_classes)
    names = list(ds.names) if hasattr(ds, "names") else [ds[i]["name"] for i in range(len(ds))]
    if args.video not in names:
        raise ValueError(f"video {args.video!r} not in the {args.split} split of {root} "
                         f"({len(names)} videos, e.g. {names[:3]})")
    item = ds[names.index(args.video)]
    return item["feature"].float(), np.asarray(item["label"]).reshape(-1), args.video


def _video_labels(path: str, num_frames: int, num_classes: int) -> np.ndarray:
    """``--labels``: a (T,) .npy of class ids for the ``num_frames`` frames of the --video file."""
    from trgnet_fast.data.datasets import check_labels, load_npy
    labels = check_labels(load_npy(path), path, num_classes)
    if labels.shape[0] != num_frames:
        raise ValueError(f"--labels {path}: expected {num_frames} frame labels (the frames of --video), got "
                         f"{labels.shape[0]}")
    return labels


def _frames_arg(text: str | None) -> list[int]:
    """``--frames``: comma-separated frame indices, e.g. ``0,10,20``."""
    if not text:
        return []
    try:
        return [int(f) for f in text.split(",")]
    except ValueError:
        raise ValueError(f"--frames: expected comma-separated integer frame indices, e.g. 0,10,20, got "
                         f"{text!r}") from None


def viz_graphs(args) -> int:
    """Run a checkpoint (any format of ``trgnet_fast.training.published``) on one video and plot the adaptive
    graphs of its SP block."""
    from trgnet_fast.text.descriptions import joint_names
    from trgnet_fast.text.viz import extract_adaptive_graphs, plot_segment_graphs
    from trgnet_fast.training.published import load_model_any
    # the arguments are checked before the model runs (and before any file is written)
    if args.max_segments < 1:
        raise ValueError(f"--max-segments: expected ≥ 1 (segments plotted), got {args.max_segments}")
    if args.n_classes is not None and args.n_classes < 1:  # 0 was taken as "not given"
        raise ValueError(f"--n-classes: expected ≥ 1, got {args.n_classes}")
    frames = _frames_arg(args.frames)
    device = _device(args.device)
    model, info = load_model_any(args.checkpoint, args.dataset, args.n_classes, device)
    spec = args.joint_graph
    if spec is None and info.get("joint_graph") is not None:
        jg = torch.as_tensor(info["joint_graph"]).float()
    else:
        from trgnet_fast.text.priors import text_priors
        jg = text_priors(model.dataset, encoder=args.encoder, joint_graph=spec or "text",
                         include_actions=False).joint_graph
    feat, labels, name = _load_video(args, model, info)
    t = feat.shape[-1]
    bad = [f for f in frames if not 0 <= f < t]
    if bad:
        raise ValueError(f"--frames: expected frame indices in [0, {t}) for {name}, got {bad}")
    x = feat[None].to(device)
    mask = torch.ones(1, 1, t, device=device)
    res = extract_adaptive_graphs(model, x, mask, jg.to(device))
    pred = res["logits"][0].argmax(0).cpu().numpy()
    if labels is None or args.predicted:
        labels = pred
    class_names = info.get("class_names") or [f"class_{i}" for i in range(model.n_classes)]
    jnames = joint_names(model.dataset)
    os.makedirs(args.out, exist_ok=True)
    files = plot_segment_graphs(res["frame_graph"][0], res["channel_graph"][0], labels, class_names, jnames,
                                args.out, prefix=name, max_segments=args.max_segments, joint_graph=res["joint_graph"],
                                residual=args.residual)
    if frames:
        from trgnet_fast.text.viz import plot_graph
        for f in frames:
            files.append(plot_graph(res["frame_graph"][0, f].cpu().numpy(), jnames,
                                    os.path.join(args.out, f"{name}_frame{f}.png"), f"{name}: G_f at frame {f}",
                                    float(res["frame_graph"].min()), float(res["frame_graph"].max()) + 1e-6))
    npz = os.path.join(args.out, f"{name}_graphs.npz")
    np.savez_compressed(npz, frame_graph=res["frame_graph"][0].cpu().numpy(),
                        channel_graph=res["channel_graph"][0].cpu().numpy(), joint_graph=jg.cpu().numpy(),
                        labels=np.asarray(labels), prediction=pred, alpha=res["alpha"], beta=res["beta"],
                        frames=np.asarray(frames, dtype=np.int64))
    files.append(npz)
    with open(os.path.join(args.out, f"{name}_graphs.json"), "w", encoding="utf-8") as f:
        json.dump({"video": name, "alpha": res["alpha"], "beta": res["beta"], "T": int(t),
                   "model_kwargs": info.get("model_kwargs"), "files": files}, f, indent=1, default=str)
    print(f"{name}: T={t} alpha={res['alpha']:.4g} beta={res['beta']:.4g}")
    for p in files:
        print("  wrote", p)
    return 0
