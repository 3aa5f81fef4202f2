"""collate (docs/model.md#batching-padding-and-masks)."""
import pytest
import torch

from trgnet_fast.data.collate import collate, segment_capacity
from trgnet_fast.data.labels import IGNORE_INDEX


def item(T, C=3, V=4, name="v"):
    return {"feature": torch.randn(C, V, T), "label": torch.randint(0, 5, (T,)),
            "boundary": torch.rand(T), "name": name}


def test_collate_padding_and_mask():
    items = [item(3, name="a"), item(5, name="b"), item(1, name="c")]
    b = collate(items)
    assert b["x"].shape == (3, 3, 4, 5) and b["labels"].shape == (3, 5)
    assert b["boundary"].shape == (3, 1, 5) and b["mask"].shape == (3, 1, 5) and b["mask"].dtype == torch.bool
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
