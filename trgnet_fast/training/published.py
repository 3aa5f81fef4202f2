"""Loading TRG-Net weights from any accepted checkpoint: the trainer's, and the published code's.

Checkpoints accepted (tolerant, first match wins):
  * the trainer's dict (``model`` state_dict + ``model_kwargs``; ``config``, ``class_names``, ``joint_graph``
    are used when present);
  * a dict with ``model`` (or ``state_dict``) and optionally ``config`` ({"dataset", "model": {"n_classes", ...}});
  * a bare state_dict (.pt/.prm, e.g. the published ``best_test_F1_0.5_model.prm``); ``module.`` prefixes are
    stripped. Missing constructor arguments are inferred from parameter shapes (V → dataset, K, text_dim, layer
    and stage counts; SFI layers default to the last ones); ``dataset`` / ``n_classes`` arguments override.

Every file is read with the safe loader of ``trgnet_fast/training/checkpoint.py`` (``weights_only=True``).
The published parameter names are TRGNet's own (docs/model.md#parameter-names-and-checkpoints), so a published
state_dict loads without renaming.
"""
from __future__ import annotations

import re

import torch

from trgnet_fast.model.trgnet import TRGNet
from trgnet_fast.training.checkpoint import safe_load

_V_TO_DATASET = {25: "PKU-subject", 19: "LARA", 17: "TCG-15"}


def strip_module_prefix(sd: dict) -> dict:
    """``sd`` without the ``module.`` prefix that DataParallel / DDP put on every key."""
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
    obj = safe_load(path)
    info = {"config": None, "class_names": None, "joint_graph": None}
    sd = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        got = f"a dict of {len(sd)} entries, not all tensors" if isinstance(sd, dict) else f"a {type(sd).__name__}"
        raise ValueError(f"{path}: unrecognised checkpoint: expected a state_dict (dict of tensors), alone or "
                         f"under 'model' / 'state_dict' in a dict, got {got}")
    sd = strip_module_prefix(sd)
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
