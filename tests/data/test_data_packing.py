"""Packed batches (docs/model.md#packed-batches): pack_collate against the padded collate, the frame-budget batch
sampler, the datasets' frame counts read from their labels."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from trgnet_fast.data.collate import collate
from trgnet_fast.data.datasets import CsvSegmentationDataset, MSTCNDataset
from trgnet_fast.data.packing import (FrameBudgetBatchSampler, batch_frames, deal, first_fit, frame_counts,
                                      pack_collate)
from trgnet_fast.data.synthetic import make_synthetic
from trgnet_fast.losses import LossTargetBuilder
from trgnet_fast.model.packing import unpack

K = 5


def item(T, C=3, V=4, name="v", gen=None):
    return {"feature": torch.randn(C, V, T, generator=gen), "label": torch.randint(0, K, (T,), generator=gen),
            "boundary": (torch.rand(T, generator=gen) < 0.3).float(), "name": name}


@pytest.fixture
def gen():
    g = torch.Generator()
    g.manual_seed(int(torch.randint(0, 2**31 - 1, ())))  # fresh inputs every run
    return g


def builder(gen):
    return LossTargetBuilder(torch.rand(K, K, generator=gen), use_aris_abs=True, use_aris_rel=True)


@pytest.mark.parametrize("lengths", [[7], [3, 9, 1, 9, 4], [2, 2]])
def test_pack_collate_equals_collate_unpacked(gen, lengths):
    batch = [item(T, name=f"n{i}", gen=gen) for i, T in enumerate(lengths)]
    build = builder(gen)
    packed, padded = pack_collate(batch, build), collate(batch, build)
    T = sum(lengths)
    assert packed["x"].shape == (1, 3, 4, T) and packed["x"].dtype == torch.float32
    assert packed["mask"].shape == (1, 1, T) and packed["mask"].dtype == torch.bool and packed["mask"].all()
    assert packed["packed"].lengths == tuple(lengths) and packed["packed"].cu_seqlens.device.type == "cpu"
    assert torch.equal(unpack(packed["x"], packed["packed"]), padded["x"])
    for key in ("labels", "boundary", "lengths"):
        assert packed[key].dtype == padded[key].dtype and torch.equal(packed[key], padded[key]), key
    assert torch.equal(packed["loss_mask"], padded["mask"])
    assert packed["names"] == padded["names"] == [f"n{i}" for i in range(len(lengths))]
    assert packed["max_segments"] == padded["max_segments"]
    got, expected = (torch.utils._pytree.tree_leaves(b["loss_targets"]) for b in (packed, padded))
    assert len(got) == len(expected) > 10 and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert "loss_targets" not in pack_collate(batch)


def test_pack_collate_concatenates_the_features_in_order(gen):
    batch = [item(T, gen=gen) for T in (4, 6)]
    x = pack_collate(batch)["x"][0]
    assert torch.equal(x[..., :4], batch[0]["feature"]) and torch.equal(x[..., 4:], batch[1]["feature"])


def test_pack_collate_refuses_what_collate_refuses(gen):
    with pytest.raises(ValueError, match="pack_collate: empty batch"):
        pack_collate([])
    with pytest.raises(ValueError, match=r"pack_collate: item 1 \(v\): expected feature \(3, 4, T\), got \(3, 5, 3\)"):
        pack_collate([item(3, gen=gen), item(3, V=5, gen=gen)])
    bad = item(3, gen=gen)
    bad["label"] = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"pack_collate: item 0 \(v\): feature has 3 frames, labels \(4,\)"):
        pack_collate([bad])
    with pytest.raises(ValueError, match=r"collate: item 0 \(v\): feature has 3 frames, labels \(4,\)"):
        collate([bad])


def test_first_fit_fills_the_first_open_pack():
    # 0 (5) opens A; 1 (3) fills A to 8; 2 (4) opens B; 3 (2) skips the full A, joins B; 4 (6) fits neither
    assert first_fit(range(5), [5, 3, 4, 2, 6], 8) == [[0, 1], [2, 3], [4]]
    # the over-budget video 1 is alone, and 2 goes back to the first pack
    assert first_fit(range(3), [3, 10, 2], 5) == [[0, 2], [1]]
    assert first_fit([2, 0, 1], [3, 10, 2], 5) == [[2, 0], [1]]


def test_deal_pads_with_the_first_packs_cyclically():
    packs = [[0], [1], [2], [3], [4]]
    assert [deal(packs, r, 3) for r in range(3)] == [[[0], [3]], [[1], [4]], [[2], [0]]]
    assert [deal(packs[:1], r, 3) for r in range(3)] == [[[0]]] * 3
    assert deal(packs, 0, 1) == packs


def random_lengths(n, seed=0):
    return torch.randint(1, 60, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_sampler_is_deterministic_and_changes_order_per_epoch():
    lengths = random_lengths(50)
    a, b = FrameBudgetBatchSampler(lengths, 100, seed=3), FrameBudgetBatchSampler(lengths, 100, seed=3)
    epoch0 = list(a)
    assert epoch0 == list(b) == list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != epoch0
    a.set_epoch(0)
    assert list(a) == epoch0
    assert list(FrameBudgetBatchSampler(lengths, 100, seed=4)) != epoch0


def test_sampler_order_is_the_distributed_samplers_permutation():
    """One video per pack (each as long as the budget): the packs list the epoch's permutation of seed + epoch."""
    sampler = FrameBudgetBatchSampler([10] * 20, 10, seed=7)
    sampler.set_epoch(2)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(9)).tolist()
    assert list(sampler) == [[i] for i in order]


def test_sampler_without_shuffle_keeps_file_order():
    sampler = FrameBudgetBatchSampler([5, 3, 4, 2, 6], 8, shuffle=False)
    assert list(sampler) == [[0, 1], [2, 3], [4]]
    sampler.set_epoch(5)
    assert list(sampler) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("epoch", [0, 1])
def test_sampler_covers_every_video_once_within_the_budget(world, epoch):
    lengths, budget = random_lengths(41, seed=epoch) + [130], 120  # the last video is over the budget
    ranks = [FrameBudgetBatchSampler(lengths, budget, seed=1, rank=r, world=world) for r in range(world)]
    for s in ranks:
        s.set_epoch(epoch)
    shares = [list(s) for s in ranks]
    assert len({len(share) for share in shares}) == 1 and all(len(s) == len(share) for s, share in zip(ranks, shares))
    dealt = [shares[i % world][i // world] for i in range(len(shares[0]) * world)]  # undo the round robin
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1 + epoch)).tolist()
    packs = first_fit(order, lengths, budget)
    assert dealt[:len(packs)] == packs and len(dealt) - len(packs) < world
    assert dealt[len(packs):] == packs[:len(dealt) - len(packs)]  # the padding repeats the first packs
    assert sorted(i for pack in packs for i in pack) == list(range(len(lengths)))
    assert [41] in packs
    assert all(sum(lengths[i] for i in pack) <= budget for pack in packs if pack != [41])


def test_sampler_with_fewer_packs_than_ranks_repeats_them():
    shares = [list(FrameBudgetBatchSampler([3, 4, 8], 10, rank=r, world=3, shuffle=False)) for r in range(3)]
    assert shares == [[[0, 1]], [[2]], [[0, 1]]]


def test_sampler_drives_a_data_loader(gen):
    items = [item(T, name=str(i), gen=gen) for i, T in enumerate([6, 2, 9, 5, 3])]
    sampler = FrameBudgetBatchSampler([it["feature"].shape[2] for it in items], 10, shuffle=False)
    loader = DataLoader(items, batch_sampler=sampler, collate_fn=pack_collate)
    assert len(loader) == len(sampler) == 3
    assert [b["names"] for b in loader] == [["0", "1"], ["2"], ["3", "4"]]
    assert [b["x"].shape[-1] for b in loader] == [8, 9, 8]


@pytest.mark.parametrize("kwargs, match", [
    ({"lengths": []}, r"lengths: expected a non-empty sequence of ints ≥ 1 .* got 0 values"),
    ({"lengths": [3, 0, 2]}, r"lengths: .* bad ones \[0\]"),
    ({"lengths": [3, 2.5]}, r"lengths: .* bad ones \[2\.5\]"),
    ({"frame_budget": 0}, r"frame_budget: expected an int ≥ 1, got 0"),
    ({"frame_budget": 10.0}, r"frame_budget: expected an int ≥ 1, got 10\.0"),
    ({"world": 0}, r"world: expected an int ≥ 1, got 0"),
    ({"rank": 2, "world": 2}, r"rank: expected an int in 0\.\.1 \(world 2\), got 2"),
    ({"rank": -1}, r"rank: expected an int in 0\.\.0 \(world 1\), got -1"),
    ({"seed": -1}, r"seed: expected an int ≥ 0, got -1"),
])
def test_sampler_argument_errors(kwargs, match):
    args = {"lengths": [3, 4], "frame_budget": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        FrameBudgetBatchSampler(**args)


def test_set_epoch_refuses_a_negative_epoch():
    with pytest.raises(ValueError, match=r"epoch: expected an int ≥ 0, got -1"):
        FrameBudgetBatchSampler([3], 10).set_epoch(-1)


def test_batch_frames_padded_and_packed():
    lengths = [5, 3, 4, 2, 6]
    batches = [[0, 1], [2, 3], [4]]
    assert batch_frames(batches, lengths, packed=True) == 20
    assert batch_frames(batches, lengths, packed=False) == 2 * 5 + 2 * 4 + 6


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    return out, make_synthetic(out, n_train=4, n_val=0, n_test=0, seed=5, min_frames=20, max_frames=41)


@pytest.mark.parametrize("rate", [1, 3])
def test_csv_frame_counts_are_the_item_lengths(synthetic, rate):
    out, info = synthetic
    ds = CsvSegmentationDataset(info["train_csv"], out, info["dataset"], rate=rate)
    counts = [ds[i]["feature"].shape[-1] for i in range(len(ds))]
    assert [ds.num_frames(i) for i in range(len(ds))] == frame_counts(ds) == counts
    full = [len(np.load(out / "gt_arr" / f"{name}.npy")) for name in ds.names]
    assert counts == [-(-n // rate) for n in full] and len(set(full)) > 1
    assert frame_counts(Subset(Subset(ds, [3, 1, 0]), [2, 0])) == [counts[0], counts[3]]


def write_mstcn(root, frames):
    for sub in ("features", "groundTruth", "splits"):
        (root / sub).mkdir(parents=True)
    (root / "mapping.txt").write_text("0 idle\n1 wave\n")
    rng = np.random.default_rng(0)
    for i, T in enumerate(frames):
        np.save(root / "features" / f"v{i}.npy", rng.standard_normal((6, 17, T)).astype(np.float32))
        (root / "groundTruth" / f"v{i}.txt").write_text("idle\n" * (T // 2) + "wave\n" * (T - T // 2))
    (root / "splits" / "train.bundle").write_text("".join(f"v{i}.txt\n" for i in range(len(frames))))


@pytest.mark.parametrize("rate, expected", [(1, [7, 12, 9]), (2, [4, 6, 5])])
def test_mstcn_frame_counts_are_the_item_lengths(tmp_path, rate, expected):
    write_mstcn(tmp_path, [7, 12, 9])
    ds = MSTCNDataset(tmp_path, "train.bundle", "TCG-15", feature_layout="CVT", rate=rate)
    assert frame_counts(ds) == [ds[i]["feature"].shape[-1] for i in range(3)] == expected
    assert frame_counts(Subset(ds, [2])) == expected[2:]


def test_frame_counts_read_no_features(tmp_path):
    write_mstcn(tmp_path, [7, 12])
    (tmp_path / "features" / "v1.npy").unlink()
    ds = MSTCNDataset(tmp_path, "train.bundle", "TCG-15", feature_layout="CVT")
    assert frame_counts(ds) == [7, 12]
    with pytest.raises(FileNotFoundError, match="v1.npy"):
        ds[1]


def test_frame_counts_refuse_a_video_too_short_for_the_model(tmp_path):
    write_mstcn(tmp_path, [4])  # 1 frame after downsampling by 4
    ds = MSTCNDataset(tmp_path, "train.bundle", "TCG-15", feature_layout="CVT", rate=4)
    with pytest.raises(ValueError, match=r"v0\.txt: expected a video of at least 2 frames after temporal "
                                         r"downsampling by 4"):
        ds.num_frames(0)


def test_frame_counts_of_other_datasets_name_the_type():
    with pytest.raises(TypeError, match="dataset: expected a CsvSegmentationDataset .* got TensorDataset"):
        frame_counts(Subset(TensorDataset(torch.zeros(3)), [0]))
