import os

import numpy as np
import pytest

from train_helpers import TINY_MODEL
from trgnet_fast.data.labels import boundary_from_labels, downsample
from trgnet_fast.losses import boundary_pos_weight
from trgnet_fast.training import Trainer
from trgnet_fast.training.config import ConfigError, load_config
from trgnet_fast.training.data import build_splits, class_names, ensure_synthetic, full_rate_boundaries, resolve


def _names(ds):
    return [ds[i]["name"] for i in range(len(ds))]


def test_validation_is_carved_from_training_list_not_test(tiny_data):
    # published make_csv_files rule, in csv order: 0-based positions j with j % every == every - 1
    cfg = load_config("synthetic", [f"data.dir={tiny_data}", "data.val_every=4"])
    splits = build_splits(cfg, tiny_data, 10)
    assert _names(splits["val"]) == ["train_0003", "train_0007"]
    assert _names(splits["train"]) == ["train_0000", "train_0001", "train_0002", "train_0004", "train_0005",
                                       "train_0006"]
    cfg = load_config("synthetic", [f"data.dir={tiny_data}", "data.val_every=9"])
    splits = build_splits(cfg, tiny_data, 10)  # 8 videos: shorter than the rule's period → no validation
    assert len(splits["val"]) == 0 and len(splits["train"]) == 8
    with pytest.raises(ConfigError, match=r"'data\.val_every': expected an integer ≥ 2, got 1"):
        load_config("synthetic", [f"data.dir={tiny_data}", "data.val_every=1"])  # 1 would leave no training video


def _lara_csv_data(root, boundaries):
    """LARA layout (random raw (6, T, 19, 1) features) with the given full-rate boundary arrays, one video each."""
    rng = np.random.default_rng()
    for sub in ("features", "gt_arr", "gt_boundary_arr"):
        os.makedirs(os.path.join(root, "LARA", sub), exist_ok=True)
    (root / "mapping.txt").write_text("".join(f"{i} c{i}\n" for i in range(8)))
    rows = []
    for i, b in enumerate(boundaries):
        T = len(b)
        np.save(root / "LARA" / "features" / f"L{i}.npy", rng.standard_normal((6, T, 19, 1)).astype(np.float32))
        np.save(root / "LARA" / "gt_arr" / f"L{i}.npy", np.repeat([i % 8, (i + 1) % 8], [T // 2, T - T // 2]))
        np.save(root / "LARA" / "gt_boundary_arr" / f"L{i}.npy", np.asarray(b))
        rows.append(f"/LARA/features/L{i}.npy,/LARA/gt_arr/L{i}.npy,/LARA/gt_boundary_arr/L{i}.npy\n")
    (root / "train.csv").write_text("feature,label,boundary\n" + "".join(rows))


@pytest.mark.filterwarnings("ignore:no text inputs")
def test_pos_weight_counts_full_rate_training_boundaries(tmp_path):
    """LARA is downsampled ×4 for training, but pos_weight is counted on the full-rate boundary files of the
    training videos only (carved validation excluded; the reader refuses values other than 0 and 1)."""
    b0 = boundary_from_labels(np.repeat([0, 1], [8, 8]))           # 1 at 0, 8, 9: 3 positives of 16
    b1 = np.zeros(16, np.float32)
    b1[[0, 12]] = 1.0                                                # 2 positives of 16
    b2 = np.ones(16, np.float32)                                     # validation video (position 2, every 3)
    _lara_csv_data(tmp_path, [b0, b1, b2])
    cfg = load_config("LARA", [f"data.dir={tmp_path}", "data.train_csv=train.csv", "data.test_csv=null",
                               "data.mapping=mapping.txt", "data.val_every=3", f"output_dir={tmp_path / 'out'}",
                               *TINY_MODEL])
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    trainer.setup()
    assert _names(trainer.splits["val"]) == ["L2"] and _names(trainer.splits["train"]) == ["L0", "L1"]
    assert float(trainer.criterion.pos_weight) == pytest.approx(32 / 5, rel=1e-6)
    arrays, sources = full_rate_boundaries(trainer.splits["train"])
    assert sources == [str(tmp_path) + f"/LARA/gt_boundary_arr/L{i}.npy" for i in (0, 1)]
    assert [a.tolist() for a in arrays] == [b0.tolist(), b1.tolist()]
    # what the downsampled items would give instead: 8 frames, 4 positives (b0 → 1,0,1,0; b1 → 1,0,0,1)
    down = [downsample(np.zeros((1, 16)), np.zeros(16), b, 4)[2] for b in (b0, b1)]
    assert [d.tolist() for d in down] == [[1, 0, 1, 0], [1, 0, 0, 1]]
    assert boundary_pos_weight(down) == 2.0 and [it["boundary"].tolist() for it in trainer.splits["train"]] == \
        [d.tolist() for d in down]
    b1[5] = 0.5  # boundary arrays hold 0 and 1 (the published generator): anything else is refused, naming the file
    _lara_csv_data(tmp_path, [b0, b1, b2])
    with pytest.raises(ValueError, match=r"LARA/gt_boundary_arr/L1\.npy: expected boundary values 0 or 1, "
                                         r"got \[0\.5\]"):
        Trainer(cfg, log=lambda m: None, progress=False).setup()


def test_full_rate_boundaries_needs_a_reader_dataset():
    with pytest.raises(TypeError, match=r"dataset: expected a CsvSegmentationDataset .*got list"):
        full_rate_boundaries([1, 2])


def test_synthetic_dataset_is_generated_once(tmp_path):
    params = {"n_train": 2, "n_val": 0, "n_test": 1, "seed": 0, "min_frames": 20, "max_frames": 24}
    ensure_synthetic(str(tmp_path), params, log=lambda m: None)
    stamp = os.path.getmtime(tmp_path / "train.csv")
    messages = []
    ensure_synthetic(str(tmp_path), params, log=messages.append)
    assert messages == [] and os.path.getmtime(tmp_path / "train.csv") == stamp
    ensure_synthetic(str(tmp_path), dict(params, seed=1), log=messages.append)  # other params: regenerated
    assert len(messages) == 1


def test_paths_and_class_names(tiny_data, tmp_path):
    assert resolve("train.csv", tiny_data) == os.path.join(tiny_data, "train.csv")
    assert resolve("/abs/x.csv", tiny_data) == "/abs/x.csv"
    cfg = load_config("synthetic")
    assert len(class_names(cfg, tiny_data)) == 10  # from <root>/mapping.txt
    pku = load_config("PKU-view", ["data.mapping=null"])
    assert class_names(pku, str(tmp_path)) == [f"class_{i}" for i in range(52)]  # no mapping: published K
