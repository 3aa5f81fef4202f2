import os

from trgnet_fast.training.config import load_config
from trgnet_fast.training.data import build_splits, carve_validation, class_names, ensure_synthetic, resolve


def test_carve_validation_every_tenth():
    train, val = carve_validation(25, 10)
    assert val == [0, 10, 20] and len(train) == 22 and not set(train) & set(val)
    assert carve_validation(1, 10) == ([0], [])
    assert carve_validation(3, 1) == ([1, 2], [0])  # never the whole list


def test_validation_is_carved_from_training_list_not_test(tiny_data):
    cfg = load_config("synthetic", [f"data.dir={tiny_data}", "data.val_every=4"])
    splits = build_splits(cfg, tiny_data, 10)
    val = {splits["val"][i]["name"] for i in range(len(splits["val"]))}
    train = {splits["train"][i]["name"] for i in range(len(splits["train"]))}
    assert val == {"train_0000", "train_0004"} and len(train) == 6 and not val & train


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
