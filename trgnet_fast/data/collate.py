"""Batching with right padding and validity masks (docs/model.md#batching-padding-and-masks)."""
from __future__ import annotations

import torch

from trgnet_fast.data.labels import IGNORE_INDEX, label_runs
from trgnet_fast.data.seeded_batches import batch_generator


def segment_capacity(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, minimum: int = 8) -> int:
    """A static bound on the ARIS segments of a label batch (``losses.extract_segments(max_segments=...)``):
    the number of label runs (every real segment; the published scan only drops some) rounded up to a power
    of two ≥ ``minimum``, so that a training run sees few distinct bounds (one CUDA graph per bucket).

    labels: (N, T) integer; meant for the collate's CPU labels (on a GPU tensor this reads the device).
    """
    if labels.dim() != 2 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected an (N, T) integer tensor, got shape {tuple(labels.shape)}, "
                         f"dtype {labels.dtype}")
    runs = int(label_runs(labels.long(), ignore_index)[1].sum())
    return max(int(minimum), 1 << max(runs - 1, 0).bit_length())


def bucket_length(frames: int, per_octave: int = 4) -> int:
    """The padded length of a batch whose longest video has ``frames`` frames: the smallest length ≥ frames of
    the form m · 2^e with per_octave ≤ m < 2 · per_octave (every length below per_octave is its own). Padding stays
    under 1 / per_octave of ``frames`` and a training run sees about per_octave · log2(longest / shortest) + 1 distinct
    lengths (one CUDA graph each, docs/training.md#cuda-graphs); e.g. per_octave = 4: 300 → 320, 6000 → 6144,
    10,333 → 12,288."""
    for name, value in (("frames", frames), ("per_octave", per_octave)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int ≥ 1, got {value!r}")
    if frames < per_octave:
        return frames
    # 2^e with per_octave · 2^e ≤ frames < 2 · per_octave · 2^e
    step = 1 << ((frames // per_octave).bit_length() - 1)
    return -(-frames // step) * step


def check_batch(batch: list[dict], where: str) -> None:
    """Refuse an empty batch or items whose feature (C, V, T_i) disagrees with the first item's C, V or with its
    own label / boundary length; errors name ``where`` (the calling collate), the item and its name."""
    if not batch:
        raise ValueError(f"{where}: empty batch")
    C, V = batch[0]["feature"].shape[:2]
    for i, item in enumerate(batch):
        f, lab, b = item["feature"], item["label"], item["boundary"]
        if f.ndim != 3 or tuple(f.shape[:2]) != (C, V):
            raise ValueError(f"{where}: item {i} ({item.get('name')}): expected feature ({C}, {V}, T), "
                             f"got {tuple(f.shape)}")
        if lab.shape != (f.shape[2],) or b.shape != (f.shape[2],):
            raise ValueError(f"{where}: item {i} ({item.get('name')}): feature has {f.shape[2]} frames, labels "
                             f"{tuple(lab.shape)}, boundary {tuple(b.shape)}")


def padded_targets(batch: list[dict], T: int, loss_targets=None, x: torch.Tensor | None = None) -> dict:
    """Everything of :func:`collate`'s padded batch but ``x``, for a batch that passed :func:`check_batch`, padded
    to T ≥ its longest video: ``labels``, ``boundary``, ``mask``, ``lengths``, ``names``, ``max_segments`` and (with
    ``loss_targets``) ``loss_targets``, shapes as there; x: the batch's (augmented) padded (N, C, V, T) features, the
    GS-TMSE similarity source of the loss targets. Shared by the packed collate, whose loss keeps the padded layout
    (docs/model.md#packed-batches)."""
    lengths = torch.tensor([item["feature"].shape[2] for item in batch], dtype=torch.int64)
    N = len(batch)
    labels = torch.full((N, T), IGNORE_INDEX, dtype=torch.int64)
    boundary = torch.zeros(N, 1, T, dtype=torch.float32)
    for i, item in enumerate(batch):
        L = item["feature"].shape[2]
        labels[i, :L] = item["label"]
        boundary[i, 0, :L] = item["boundary"]
    mask = (torch.arange(T)[None, :] < lengths[:, None])[:, None, :]
    out = {"labels": labels, "boundary": boundary, "mask": mask, "lengths": lengths,
           "names": [item.get("name", "") for item in batch], "max_segments": segment_capacity(labels)}
    if loss_targets is not None:
        longest = int(lengths.max())  # the published ARIS scan ends there, whatever the padding
        out["loss_targets"] = loss_targets(labels, mask, out["max_segments"], x,
                                           batch_length=None if longest == T else longest)
    return out


def collate(batch: list[dict], loss_targets=None, augment=None, length_buckets: int | None = None) -> dict:
    """Stack dataset items into a padded batch.

    batch: list of N items with ``feature`` (C, V, T_i) float, ``label`` (T_i,) int, ``boundary`` (T_i,) float,
    ``name`` str (and ``augment_seed`` with ``augment``). With T = max_i T_i (published), or with ``length_buckets``
    (an int, lengths per octave) T = ``bucket_length(max_i T_i, length_buckets)``, returns::

        x         (N, C, V, T) float32, zero right-padded (augmented with ``augment``)
        labels    (N, T) int64, padded with 255 (the ignore index)
        boundary  (N, 1, T) float32, padded with 0
        mask      (N, 1, T) bool, True for t < T_i
        lengths   (N,) int64
        names     list of N str
        max_segments  int: a static bound on the batch's ARIS segments (``segment_capacity``), counted here
                  on the CPU so that the training step needs no host sync for it
        loss_targets  with ``loss_targets`` (a callable, ``TRGNetLoss.target_builder()``): its result for
                  (labels, mask, max_segments, x), the loss's labels-only part and the GS-TMSE pair weights of the
                  (augmented) x, built here on the CPU (docs/model.md#loss-targets)

    augment: None, or SAEP (``augment(x, generator=...)``, e.g. ``functools.partial(saep, dataset=...)``) run on x
    with the batch's generator (``data.seeded_batches.batch_generator``: the items' ``augment_seed``), here on the
    CPU in the loader's workers (docs/model.md#saep-augmentation).
    """
    check_batch(batch, "collate")
    C, V = batch[0]["feature"].shape[:2]
    T = max(item["feature"].shape[2] for item in batch)
    if length_buckets is not None:
        T = bucket_length(T, length_buckets)
    x = torch.zeros(len(batch), C, V, T, dtype=torch.float32)
    for i, item in enumerate(batch):
        x[i, :, :, :item["feature"].shape[2]] = item["feature"]
    if augment is not None:
        x = augment(x, generator=batch_generator(batch, "collate"))
    return {"x": x, **padded_targets(batch, T, loss_targets, x)}
