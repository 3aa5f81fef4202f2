"""collate (docs/model.md#batching-padding-and-masks)."""
import functools

import pytest
import torch

from trgnet_fast.data import saep
from trgnet_fast.data.collate import bucket_length, collate, segment_capacity
from trgnet_fast.data.labels import IGNORE_INDEX


def item(T, C=3, V=4, name="v"):
    return {"feature": torch.randn(C, V, T), "label": torch.randint(0, 5, (T,)),
            "boundary": torch.rand(T), "name": name}


@pytest.mark.parametrize("buckets, T", [(None, 5), (1, 8), (2, 6)])
def test_collate_padding_and_mask(buckets, T):
    """Padded to the longest item, or further to its length bucket (``length_buckets`` per octave)."""
    items = [item(3, name="a"), item(5, name="b"), item(1, name="c")]
    b = collate(items, length_buckets=buckets)
    assert b["x"].shape == (3, 3, 4, T) and b["labels"].shape == (3, T)
    assert b["boundary"].shape == (3, 1, T) and b["mask"].shape == (3, 1, T) and b["mask"].dtype == torch.bool
    assert b["lengths"].tolist() == [3, 5, 1] and b["names"] == ["a", "b", "c"]
    assert b["labels"].dtype == torch.int64 and b["x"].dtype == torch.float32
    for i, it in enumerate(items):
        L = it["feature"].shape[2]
        assert torch.equal(b["x"][i, :, :, :L], it["feature"]) and not b["x"][i, :, :, L:].any()
        assert torch.equal(b["labels"][i, :L], it["label"]) and (b["labels"][i, L:] == IGNORE_INDEX).all()
        assert torch.equal(b["boundary"][i, 0, :L], it["boundary"]) and not b["boundary"][i, 0, L:].any()
        assert b["mask"][i, 0, :L].all() and not b["mask"][i, 0, L:].any()


def test_collate_errors():
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match=r"item 1 \(v\)"):
        collate([item(3), item(3, V=5)])
    bad = item(3)
    bad["label"] = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="item 0"):
        collate([bad])


@pytest.mark.parametrize("runs, bound", [(1, 8), (8, 8), (9, 16), (17, 32)])
def test_segment_capacity_is_a_power_of_two_of_at_least_8(runs, bound):
    """The label runs of the batch rounded up to a power of two ≥ 8 (few distinct bounds: few CUDA graphs)."""
    labels = torch.arange(runs).repeat_interleave(3)[None] % 5  # neighbours differ: one run per 3 frames
    assert segment_capacity(labels) == bound


@pytest.mark.parametrize("frames, per_octave, expect", [(1, 4, 1), (7, 4, 7), (8, 4, 8), (9, 4, 10), (300, 4, 320),
                                                        (6000, 4, 6144), (10333, 4, 12288), (4096, 4, 4096),
                                                        (4097, 1, 8192), (4097, 2, 6144), (5, 8, 5)])
def test_bucket_length_examples(frames, per_octave, expect):
    assert bucket_length(frames, per_octave) == expect


@pytest.mark.parametrize("per_octave", [1, 2, 3, 4, 8])
def test_bucket_lengths_bound_the_padding_and_their_number(per_octave):
    """Every length maps to a bucket ≥ it and < (1 + 1/per_octave) times it, the buckets rise with the length, and
    PKU-MMD's range of lengths (1,860 - 10,333 frames) needs about per_octave · log2(10,333 / 1,860) + 1 of them."""
    frames = range(1, 12000)
    buckets = [bucket_length(f, per_octave) for f in frames]
    assert all(f <= b < f * (1 + 1 / per_octave) for f, b in zip(frames, buckets))
    assert all(a <= b for a, b in zip(buckets, buckets[1:]))
    assert all(bucket_length(b, per_octave) == b for b in set(buckets))  # a bucket is its own bucket
    pku = {bucket_length(f, per_octave) for f in range(1860, 10334)}
    assert len(pku) <= per_octave * 2.48 + 2


def test_bucket_length_bad_input():
    for frames in (0, -3, 2.0, True, None):
        with pytest.raises(ValueError, match="frames: expected an int ≥ 1"):
            bucket_length(frames)
    for per_octave in (0, 1.5, False):
        with pytest.raises(ValueError, match="per_octave: expected an int ≥ 1"):
            bucket_length(10, per_octave)


def test_bucketed_loss_targets_end_the_published_scan_at_the_batch_length():
    """The collate gives the loss target builder the batch's own length when it pads beyond it, and the targets'
    segments are then those of the unbucketed batch (the longest video keeps its last segment)."""
    calls = []

    def builder(labels, mask, max_segments, x, batch_length=None):
        calls.append((labels.shape, batch_length))
        return "targets"

    items = [item(9), item(6)]
    assert collate(items, builder)["loss_targets"] == "targets"
    assert collate(items, builder, length_buckets=2)["loss_targets"] == "targets"
    assert calls == [((2, 9), None), ((2, 12), 9)]


def test_augmentation_of_a_batch_padded_to_its_bucket_leaves_the_real_frames_as_unbucketed():
    """SAEP (axial rotation, joint occlusion) on the batch padded to its length bucket: the real frames get the values
    they get in the batch padded to its longest video, and the extra frames stay zero."""
    items = [item(41, C=6, V=25), item(37, C=6, V=25)]
    for it in items:
        it["augment_seed"] = 1234
    augment = functools.partial(saep, dataset="PKU-subject")
    plain = collate(items, augment=augment)["x"]
    bucketed = collate(items, augment=augment, length_buckets=2)["x"]
    assert bucketed.shape[-1] == 48 and torch.equal(bucketed[..., :41], plain)
    assert not bucketed[..., 41:].any() and not torch.equal(plain, collate(items)["x"])  # it did augment
