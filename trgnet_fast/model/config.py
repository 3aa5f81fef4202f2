"""Published constructor arguments of TRGNet per dataset (docs/model.md#training-protocol-and-configs)."""
from __future__ import annotations

from trgnet_fast.skeletons import skeleton_layout

# dataset: (in_channel, n_classes). PKU/LARA/MCFS-130 are the published TRG-Net configs; TCG-15 follows
# TMD (same lab, no TRG-Net config) and MCFS-22 the MCFS-130 settings with its 22 classes.
_DATASET_IO = {
    "PKU-subject": (12, 52),
    "PKU-view": (12, 52),
    "LARA": (12, 8),
    "MCFS-130": (2, 130),
    "MCFS-22": (2, 22),
    "TCG-15": (6, 15),
}

# The hyper-parameters every published config shares (the training config's ``model`` section starts from
# these too). SFI_layer defaults to 1..n_layers-1 (see default_sfi_layers).
ARCHITECTURE_DEFAULTS = {
    "n_features": 64,
    "n_stages": 4,
    "n_layers": 10,
    "n_refine_layers": 10,
    "n_stages_asb": 2,
    "n_stages_brb": 3,
}


def default_sfi_layers(n_layers: int) -> list[int]:
    """The published SFI layers for an encoder of ``n_layers`` layers: 1..n_layers-1."""
    return list(range(1, n_layers))


def default_config(dataset: str) -> dict:
    """Keyword arguments of ``TRGNet`` for ``dataset`` (a fresh dict on every call)."""
    skeleton_layout(dataset)  # raises ValueError for an unknown dataset
    in_channel, n_classes = _DATASET_IO[dataset]
    config = {"in_channel": in_channel, "n_features": None, "n_classes": n_classes}  # the published key order
    config.update(ARCHITECTURE_DEFAULTS)
    config["SFI_layer"] = default_sfi_layers(config["n_layers"])
    config["dataset"] = dataset
    return config
