"""Text-side inputs of training (docs/model.md#text-side): the joint graph TJG fed to the model and the action
embeddings / action graph TAG of the ARIS losses, resolved from ``cfg["text"]`` through
:func:`trgnet_fast.text.text_priors` (descriptions → offline encoder → graphs, cached on disk).

``text.joint_graph``: "text" (TJG from the joint descriptions) | "physical" (bones + I) | "identity" |
"learned" (a trainable graph initialised with the TJG) | a (V, V) .npy. ``text.action_embeddings`` / ``text.action_graph``: "text" (from the action descriptions) | a
.npy ((K, D) / (K, K)) | null — null switches that ARIS term off (the ablation switches).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from trgnet_fast.training.config import ConfigError

PUBLISHED_TEXT_DIM = 768


@dataclass
class TextInputs:
    joint_graph: torch.Tensor          # (V, V) float32 (the initial value when trainable)
    joint_graph_trainable: bool        # text.joint_graph=learned: the TJG initialises a trained graph
    action_embeddings: torch.Tensor    # (K, D) float32 (zeros when ARIS absolute is off)
    action_graph: torch.Tensor         # (K, K) float32 (identity when ARIS relative is off)
    text_dim: int
    use_aris_abs: bool
    use_aris_rel: bool


def _resolve_path(path: str, base_dir: str | None) -> str:
    if os.path.isabs(path) or os.path.exists(path) or base_dir is None:
        return path
    return os.path.join(base_dir, path)


def _load(path: str, what: str, shape=None) -> torch.Tensor:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text.{what}: {path} not found")
    arr = np.load(path, allow_pickle=False)
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"text.{what}: {path} has shape {arr.shape}, expected {tuple(shape)}")
    return torch.as_tensor(np.asarray(arr, dtype=np.float32))


_warned = False


def resolve_text(text_cfg: dict, dataset: str, class_names: list[str], base_dir: str | None = None,
                 warn: bool = True) -> TextInputs:
    """TJG, action embeddings and TAG for training.

    text_cfg: the config's ``text`` section; dataset: the config's dataset (skeleton layout);
    class_names: the K class names of the mapping; base_dir: the dataset root (relative paths, and the
    ``descriptions.txt`` written next to ``mapping.txt``, e.g. by the synthetic dataset).
    """
    from trgnet_fast.text import text_priors
    from trgnet_fast.text.priors import JOINT_GRAPH_MODES

    global _warned
    k = len(class_names)
    mode = text_cfg["joint_graph"]
    if mode not in JOINT_GRAPH_MODES:
        mode = _resolve_path(mode, base_dir)
    emb_spec, tag_spec = text_cfg["action_embeddings"], text_cfg["action_graph"]
    descriptions = text_cfg["descriptions"]
    if descriptions is None and base_dir is not None and os.path.isfile(os.path.join(base_dir, "descriptions.txt")):
        descriptions = os.path.join(base_dir, "descriptions.txt")
    elif descriptions is not None:
        descriptions = _resolve_path(descriptions, base_dir)

    needs_actions = "text" in (emb_spec, tag_spec)
    embeddings_dir = text_cfg["embeddings_dir"]
    priors = text_priors(text_cfg["dataset"] or dataset, class_names=list(class_names),
                         descriptions_file=descriptions, encoder=text_cfg["encoder"], pooling=text_cfg["pooling"],
                         cache_dir=text_cfg["cache_dir"], joint_graph=mode, include_actions=needs_actions,
                         embeddings_dir=_resolve_path(embeddings_dir, base_dir) if embeddings_dir else None)
    if needs_actions and priors.action_embeddings is None:
        raise ConfigError(f"text: no action texts for {k} classes ({priors.metadata['actions'].get('reason')}); "
                          "give text.descriptions or set text.action_embeddings/action_graph to .npy files or null")

    emb = priors.action_embeddings if emb_spec == "text" else (
        _load(_resolve_path(emb_spec, base_dir), "action_embeddings") if emb_spec else None)
    tag = priors.action_graph if tag_spec == "text" else (
        _load(_resolve_path(tag_spec, base_dir), "action_graph", (k, k)) if tag_spec else None)
    if emb is not None and (emb.ndim != 2 or emb.shape[0] != k):
        raise ValueError(f"text.action_embeddings: expected shape ({k}, D), got {tuple(emb.shape)}")
    if tag is not None and tuple(tag.shape) != (k, k):
        raise ValueError(f"text.action_graph: expected shape ({k}, {k}), got {tuple(tag.shape)}")
    text_dim = text_cfg["text_dim"] or (emb.shape[1] if emb is not None else PUBLISHED_TEXT_DIM)
    if emb is not None and emb.shape[1] != text_dim:
        raise ValueError(f"text.text_dim={text_dim} but action_embeddings have D={emb.shape[1]}")
    use_abs, use_rel = emb is not None, tag is not None
    missing = [n for n, ok in (("action_embeddings → ARIS absolute", use_abs),
                               ("action_graph → ARIS relative", use_rel)) if not ok]
    if missing and warn and not _warned:
        warnings.warn("no text inputs (" + "; ".join(missing) + "): those ARIS loss terms are disabled",
                      stacklevel=2)
        _warned = True
    return TextInputs(
        joint_graph=priors.joint_graph, joint_graph_trainable=priors.joint_graph_trainable,
        action_embeddings=emb if emb is not None else torch.zeros(k, text_dim),
        action_graph=tag if tag is not None else torch.eye(k),
        text_dim=int(text_dim), use_aris_abs=use_abs, use_aris_rel=use_rel)
