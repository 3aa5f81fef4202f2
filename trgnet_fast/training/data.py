"""Datasets and loaders for training/evaluation from a config: the published csv layout or the MS-TCN layout,
a validation split carved from the training list, and the cached built-in synthetic dataset."""
from __future__ import annotations

import json
import math
import os
from functools import partial
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from trgnet_fast.data import CsvSegmentationDataset, MSTCNDataset, collate, make_synthetic, read_mapping, saep
from trgnet_fast.data.datasets import carve_validation, unwrap_subsets
from trgnet_fast.data.packing import FrameBudgetBatchSampler, frame_counts, pack_collate
from trgnet_fast.data.seeded_batches import SeededBatches, SeededItems
from trgnet_fast.model import default_config
from trgnet_fast.skeletons import skeleton_layout


def ensure_synthetic(out_dir: str, params: dict, log=print) -> str:
    """Generate the synthetic dataset once under ``out_dir`` (re-used when the stamp file matches)."""
    stamp = os.path.join(out_dir, "synthetic.json")
    if os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == params:
                return out_dir
    log(f"generating the synthetic dataset in {out_dir} ...")
    make_synthetic(out_dir, **params)
    tmp = stamp + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(params, f)
    os.replace(tmp, stamp)
    return out_dir


def data_dir(cfg: dict) -> str:
    """The dataset root of ``cfg`` (the synthetic cache dir when data.dir is null)."""
    if cfg["data"]["dir"]:
        return cfg["data"]["dir"]
    return os.path.join(output_dir(cfg), "synthetic_data")


def output_dir(cfg: dict) -> str:
    return cfg["output_dir"] or os.path.join("runs", cfg["name"])


def resolve(path: str | None, root: str) -> str | None:
    """A split/mapping path: absolute as is; else relative to the dataset root if it exists there, else
    relative to the current directory (published layout: ./csv next to ./datasets)."""
    if path is None:
        return None
    if os.path.isabs(path):
        return path
    candidate = os.path.join(root, path)
    if os.path.exists(candidate) or not os.path.exists(path):
        return candidate
    return path


def class_names(cfg: dict, root: str) -> list[str]:
    """Class names from the mapping file (data.mapping, else <root>/mapping.txt, <root>/<dataset>/mapping.txt,
    <root>/<layout>/mapping.txt); else ``class_<i>`` for the dataset's published class count."""
    candidates = [resolve(cfg["data"]["mapping"], root)] if cfg["data"]["mapping"] else [
        os.path.join(root, "mapping.txt"), os.path.join(root, cfg["dataset"], "mapping.txt"),
        os.path.join(root, skeleton_layout(cfg["dataset"]), "mapping.txt")]
    for path in candidates:
        if path and os.path.isfile(path):
            return read_mapping(path)
    if cfg["data"]["mapping"]:
        raise FileNotFoundError(f"data.mapping: {candidates[0]} not found")
    k = cfg["model"]["n_classes"] or default_config(cfg["dataset"])["n_classes"]
    return [f"class_{i}" for i in range(k)]


def make_dataset(cfg: dict, split: str, root: str, num_classes: int | None = None) -> Dataset:
    key = {"train": "train_csv", "test": "test_csv", "val": "val_csv"}[split]
    path = resolve(cfg["data"][key], root)
    if path is None:
        raise ValueError(f"data.{key} is not set")
    d = cfg["data"]
    if d["format"] == "csv":
        return CsvSegmentationDataset(path, root, cfg["dataset"], feature_format=d["feature_format"],
                                      num_classes=num_classes, cache=d["cache"])
    return MSTCNDataset(root, path, cfg["dataset"], feature_layout=d["feature_layout"], cache=d["cache"])


def build_splits(cfg: dict, root: str, num_classes: int) -> dict:
    """{"train": Dataset, "val": Dataset} — validation from data.val_csv, or carved from the training list
    (csv rows or bundle lines, in file order) by :func:`~trgnet_fast.data.datasets.carve_validation` with
    every = data.val_every: the videos at 0-based positions j with j % every == every - 1 (published:
    every 10th video, starting with the 10th). A list shorter than data.val_every gives an empty validation
    split; the trainer then trains without validation and keeps the last epoch as best.pt."""
    full = make_dataset(cfg, "train", root, num_classes)
    if cfg["data"]["val_csv"]:
        return {"train": full, "val": make_dataset(cfg, "val", root, num_classes)}
    tr, va = carve_validation(len(full), cfg["data"]["val_every"])  # ≥ 2 (training/config.py)
    return {"train": Subset(full, tr), "val": Subset(full, va)}


def full_rate_boundaries(dataset: Dataset) -> tuple[Iterator[np.ndarray], list[str]]:
    """(boundary arrays, their source files) of the videos of ``dataset`` — a CsvSegmentationDataset or
    MSTCNDataset, or a (nested) Subset of one, e.g. the training part of a carved split — at the full frame
    rate, i.e. before any temporal downsampling (LARA ×4), without reading features. The arrays are read
    lazily; pass both to ``boundary_pos_weight`` for the published BCE pos_weight."""
    dataset, indices = unwrap_subsets(dataset)
    if not hasattr(dataset, "full_rate_boundary"):
        raise TypeError(f"dataset: expected a CsvSegmentationDataset or MSTCNDataset (or a Subset of one), got "
                        f"{type(dataset).__name__}")
    return (dataset.full_rate_boundary(i) for i in indices), [dataset.boundary_source(i) for i in indices]


def _seed_worker(worker_id):  # pragma: no cover - runs in workers
    import random

    import numpy as np
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def frame_budget(cfg: dict, lengths: list[int]) -> int:
    """Frames per packed batch: data.frame_budget, or train.batch_size × the mean of ``lengths`` (rounded up), so
    that a pack holds train.batch_size videos on average (docs/training.md#packed-batches)."""
    if cfg["data"].get("frame_budget") is not None:
        return cfg["data"]["frame_budget"]
    return math.ceil(cfg["train"]["batch_size"] * sum(lengths) / max(len(lengths), 1))


# padded lengths per octave with CUDA graphs: on PKU-like batches of 8 (benchmarks/NOTES.md#cuda-graphs) 4.2 % more
# frames than padding to each batch's longest video, in 10 lengths (4 per octave: 8.6 %, 6 lengths)
GRAPH_LENGTH_BUCKETS = 8


def length_buckets(cfg: dict, graphs: str = "train") -> int | None:
    """Padded lengths per octave (``data.collate.bucket_length``) of the training batches (``graphs`` "train") or of
    the graphed validation and evaluation batches ("eval"): data.length_buckets, else GRAPH_LENGTH_BUCKETS with
    ``graphs``.cuda_graphs, else None (padded to the batch's longest video, published)."""
    k = cfg["data"]["length_buckets"]
    return GRAPH_LENGTH_BUCKETS if k is None and cfg[graphs]["cuda_graphs"] else k


def train_loader(dataset: Dataset, cfg: dict, rank: int, world: int,
                 loss_targets=None) -> tuple[DataLoader, object]:
    """Shuffled loader (drop_last when batch > 1, as published); a DistributedSampler when world > 1. The shuffle
    order is a function of (seed, epoch) only, so resume reproduces it. loss_targets: optional builder of the loss's
    labels-only part (``TRGNetLoss.target_builder()``), run by the collate in the loader's workers. With data.augment
    the collate runs SAEP on each batch there too, with the batch's own seed (``data.seeded_batches``: a function of
    the seed, rank, epoch and batch index, so resume and any number of workers reproduce it). With data.packing the
    batches are packs of whole videos up to ``frame_budget`` frames (``FrameBudgetBatchSampler``: the same number per
    rank, a function of (seed, epoch) too) collated by ``pack_collate``; else padded batches, to the lengths of
    :func:`length_buckets`. Returns the loader and the object whose ``set_epoch`` selects an epoch."""
    seed = cfg["train"]["seed"]
    if cfg["data"]["packing"]:
        lengths = frame_counts(dataset)
        batches = epochs = FrameBudgetBatchSampler(lengths, frame_budget(cfg, lengths), seed=seed, rank=rank,
                                                   world=world)
        collate_fn = pack_collate
    else:
        bs = cfg["train"]["batch_size"]
        epochs = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        batches = BatchSampler(epochs, bs, drop_last=bs > 1)
        collate_fn = partial(collate, length_buckets=length_buckets(cfg))
    augment = None
    if cfg["data"]["augment"]:
        augment = partial(saep, dataset=cfg["dataset"])
        batches = epochs = SeededBatches(batches, seed, rank, epochs)
        dataset = SeededItems(dataset)
    loader = DataLoader(dataset, batch_sampler=batches,
                        collate_fn=partial(collate_fn, loss_targets=loss_targets, augment=augment),
                        num_workers=cfg["data"]["num_workers"], worker_init_fn=_seed_worker)
    return loader, epochs


def eval_loader(dataset: Dataset, cfg: dict, rank: int = 0, world: int = 1) -> DataLoader:
    """Batch 1, in order; with world > 1 every rank gets a disjoint strided share (no padding duplicates). With
    data.packing: packs of the share's videos in order, up to ``frame_budget`` frames each."""
    if world > 1:
        dataset = Subset(dataset, list(range(rank, len(dataset), world)))
    # .get: the configs of checkpoints written before data.packing existed lack the key
    if cfg["data"].get("packing", False) and len(dataset):
        lengths = frame_counts(dataset)
        sampler = FrameBudgetBatchSampler(lengths, frame_budget(cfg, lengths), shuffle=False)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=pack_collate,
                          num_workers=cfg["data"]["num_workers"])
    return DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate,
                      num_workers=cfg["data"]["num_workers"])
