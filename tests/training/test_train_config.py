import pytest
import yaml

from trgnet_fast.training.config import (DEFAULTS, PRESETS, RULES, ConfigError, apply_overrides, load_config,
                                         parse_override, validate)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name):
    cfg = load_config(name)
    assert cfg["dataset"] in ("PKU-subject", "PKU-view", "LARA", "MCFS-130", "TCG-15")
    assert cfg["optim"]["lr"] > 0 and cfg["train"]["epochs"] >= 1


def test_published_values():
    pku, lara, mcfs, tcg = (load_config(n) for n in ("PKU-subject", "LARA", "MCFS-130", "TCG-15"))
    assert (pku["optim"]["lr"], pku["train"]["batch_size"], pku["train"]["epochs"]) == (1e-3, 8, 300)
    assert (lara["train"]["epochs"], lara["train"]["batch_size"]) == (120, 8)
    assert (mcfs["optim"]["lr"], mcfs["train"]["batch_size"], mcfs["train"]["epochs"]) == (5e-4, 1, 300)
    assert (tcg["optim"]["lr"], tcg["train"]["batch_size"], tcg["train"]["epochs"]) == (1e-3, 1, 200)
    assert pku["loss"]["lambda_b"] == 0.1 and pku["model"]["n_layers"] == 10 and pku["train"]["seed"] == 42
    assert pku["data"]["val_csv"] is None and pku["data"]["val_every"] == 10  # carved from train, never test


def test_overrides_are_typed_by_yaml():
    cfg = load_config("synthetic", ["optim.lr=5e-4", "train.epochs=3", "model.SFI_layer=[1, 2]",
                                    "train.bf16=true", "data.val_csv=null", "optim.grad_clip=1.5"])
    assert cfg["optim"]["lr"] == 5e-4 and cfg["train"]["epochs"] == 3
    assert cfg["model"]["SFI_layer"] == [1, 2] and cfg["train"]["bf16"] is True
    assert cfg["data"]["val_csv"] is None and cfg["optim"]["grad_clip"] == 1.5


@pytest.mark.parametrize("item, match", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("trian.epochs=3", "unknown config key 'trian'"),
    ("train.epochs.x=3", "unknown config key"),
    ("train.epochs=abc", "expected a number"),
    ("train.bf16=3", "expected true/false"),
    ("train.epochs=0", "expected an integer ≥ 1"),
    ("eval.refinement=magic", "expected one of"),
    ("train.epochs", "expected key=value"),
    ("train=3", "is a section"),
])
def test_bad_overrides_raise_clear_errors(item, match):
    with pytest.raises(ConfigError, match=match):
        load_config("synthetic", [item])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"base": "synthetic", "train": {"epochz": 2}}))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown config key 'train\.epochz'"):
        load_config(str(p))


def test_yaml_with_base_preset(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump({"base": "PKU-view", "train": {"epochs": 7}}))
    cfg = load_config(str(p), ["train.batch_size=2"])
    assert cfg["dataset"] == "PKU-view" and cfg["train"]["epochs"] == 7 and cfg["train"]["batch_size"] == 2


def test_validate_fills_defaults_and_rejects_unknown_dataset():
    assert validate({})["optim"]["betas"] == [0.9, 0.999]
    with pytest.raises(ConfigError, match="dataset"):
        apply_overrides(validate({}), ["dataset=NTU"])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-config")


def _leaf_keys(schema: dict, prefix: str = "") -> set:
    keys = set()
    for key, value in schema.items():
        keys |= _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


# at least one refused value for every key of DEFAULTS (checked by test_every_key_has_a_rule_and_a_bad_value)
BAD_VALUES = {
    "name": ['""', "null", "3"],
    "dataset": ["NTU", "null"],
    "output_dir": ["3", '""'],
    "data.dir": ["3", '""', "[a]"],
    "data.format": ["hdf5", "1"],
    "data.train_csv": ["3"],
    "data.test_csv": ["true"],
    "data.val_csv": ['""'],
    "data.val_every": ["0", "-1", "1", "true", "2.5"],
    "data.mapping": ["[a]"],
    "data.feature_format": ["npy"],
    "data.feature_layout": ["TVC"],
    "data.augment": ["1", "null"],
    "data.num_workers": ["-1", "true", "1.5"],
    "data.cache": ["0"],
    "data.packing": ["1", "on"],
    "data.frame_budget": ["0", "-5", "2.5", "true"],
    "data.length_buckets": ["0", "-1", "2.5", "true"],
    "data.synthetic.n_train": ["0", "-5"],
    "data.synthetic.n_val": ["-1"],
    "data.synthetic.n_test": ["-1", "true"],
    "data.synthetic.seed": ["-1"],
    "data.synthetic.min_frames": ["1", "0"],
    "data.synthetic.max_frames": ["1", "100"],  # 100 < data.synthetic.min_frames (200)
    "model.in_channel": ["0", "abc", "true"],
    "model.n_classes": ["0", "-2", "256"],
    "model.n_features": ["30", "0", "-4", "true", "null"],  # 4 attention heads
    "model.n_stages": ["0"],
    "model.n_layers": ["0", "-1"],
    "model.n_refine_layers": ["0"],
    "model.n_stages_asb": ["0"],
    "model.n_stages_brb": ["0"],
    "model.SFI_layer": ["[1, 1]", "[-1]", "[1, 12]", "[true]", "[1.5]", "3"],
    "model.backend": ["gpu", "3"],
    "model.dropout": ["1"],
    "model.sync_bn": ["0"],
    "model.mask_mode": ["magic"],
    "model.freeze_bn": ["maybe"],
    "text.joint_graph": ['""', "null", "3", "bogus", "graph.npz"],
    "text.action_embeddings": ["3", '""', "bogus"],
    "text.action_graph": ["[1]", "bogus"],
    "text.encoder": ["3"],
    "text.pooling": ["max"],
    "text.descriptions": ["3"],
    "text.dataset": ["nope", "3", "[PKU]"],
    "text.embeddings_dir": ["3"],
    "text.cache_dir": ['""'],
    "text.text_dim": ["0", "-1", "true"],
    "loss.lambda_b": ["-0.1", ".inf", ".nan", "true"],
    "loss.gstmse_weight": ["-1", ".nan"],
    "loss.aris_abs_weight": [".inf", "-1"],
    "loss.aris_rel_weight": ["-1", "null"],
    "loss.published_quirks": ["1"],
    "optim.lr": [".inf", "-.inf", ".nan", "0", "-1e-3", "1e39", "null", "true", "abc"],
    "optim.betas": ["[0.9]", "[0.9, 0.999, 0.1]", "[0.9, 1.0]", "[-0.1, 0.9]", "[0.9, .nan]", "[true, 0.9]", "0.9",
                    "null"],
    "optim.eps": ["0", "-1", ".nan", ".inf"],
    "optim.grad_clip": ["-1", "0", ".inf", ".nan", "true"],
    "train.epochs": ["0", "-3", "2.5", "true", ".inf"],
    "train.batch_size": ["0", "true"],
    "train.seed": ["-1", "4294967296", "true"],
    "train.device": ["gpu", "cuda:x", "tpu", "cuda:", "CPU", "1", "null"],
    "train.bf16": ["1"],
    "train.best_metric": ['""', "3", "bogus", "F1@33"],
    "train.eval_every": ["0"],
    "train.tensorboard": ["on-ish", "2"],
    "train.max_steps_per_epoch": ["-1", "0", "1.5", "true"],
    "train.log_every": ["0", "true"],
    "train.deterministic": ["0"],
    "train.cuda_graphs": ["1", "yes-ish"],
    "eval.refinement": ["magic"],
    "eval.boundary_th": ["5", "-0.1", "1.01", ".nan", "true", "null"],  # a probability threshold
    "eval.tolerance": ["-3", "2.5", "true"],  # frames
    "eval.iou_thresholds": ["[]", "[0.5, 1.5]", "[.nan]", "0.5", "[true]", "[-0.1]"],
    "eval.background": ["[1.5]", "-1", "true", '""', "[null]"],
    "eval.f1_end": ["x", "1"],
    "eval.cuda_graphs": ["1", "sometimes"],
}
BAD_CASES = [(key, raw) for key, raws in BAD_VALUES.items() for raw in raws]


def test_every_key_has_a_rule_and_a_bad_value():
    assert set(RULES) == _leaf_keys(DEFAULTS)
    assert set(BAD_VALUES) == _leaf_keys(DEFAULTS)


def _assert_names_the_key(error: ConfigError, key: str) -> None:
    message = str(error)
    assert f"config key '{key}': expected " in message and ", got " in message, message


@pytest.mark.parametrize("key, raw", BAD_CASES)
def test_bad_value_is_refused_through_an_override_naming_the_key(key, raw):
    with pytest.raises(ConfigError) as info:
        load_config("synthetic", [f"{key}={raw}"])
    _assert_names_the_key(info.value, key)


@pytest.mark.parametrize("key, raw", BAD_CASES)
def test_bad_value_is_refused_by_validate_naming_the_key(key, raw):
    keys, value = parse_override(f"{key}={raw}")
    cfg = value
    for k in reversed(keys):
        cfg = {k: cfg}
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    _assert_names_the_key(info.value, key)


@pytest.mark.parametrize("item, key, value", [
    ("train.device=cuda:1", "train.device", "cuda:1"),
    ("train.device=cpu", "train.device", "cpu"),
    ("train.device=cuda", "train.device", "cuda"),
    ("optim.grad_clip=null", "optim.grad_clip", None),
    ("train.max_steps_per_epoch=1", "train.max_steps_per_epoch", 1),
    ("train.epochs=5.0", "train.epochs", 5),  # an integral float of an integer key is stored as an int
    ("model.in_channel=12.0", "model.in_channel", 12),
    ("model.n_features=8", "model.n_features", 8),
    ("optim.betas=[0, 0.99]", "optim.betas", [0, 0.99]),
    ("eval.boundary_th=1", "eval.boundary_th", 1),
    ("eval.tolerance=0", "eval.tolerance", 0),
    ("eval.background=[background, 0]", "eval.background", ["background", 0]),
    ("model.SFI_layer=[0, 3]", "model.SFI_layer", [0, 3]),
    ("text.dataset=PKU", "text.dataset", "PKU"),
    ("loss.lambda_b=0", "loss.lambda_b", 0),
])
def test_good_values_are_kept(item, key, value):
    section, name = key.split(".")
    got = load_config("synthetic", [item])[section][name]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_validates_again_unchanged(name):
    cfg = load_config(name)
    assert validate(cfg) == cfg


def test_device_error_lists_the_accepted_forms():
    with pytest.raises(ConfigError, match=r"'train\.device': expected auto \| cpu \| cuda \| cuda:N, got 'gpu'"):
        load_config("synthetic", ["train.device=gpu"])


def test_n_features_error_names_the_head_count():
    with pytest.raises(ConfigError, match=r"'model\.n_features': expected a positive multiple of 4 \(the attention "
                                          r"head count\), got 30"):
        load_config("synthetic", ["model.n_features=30"])


def test_sfi_layer_must_be_below_n_layers():
    with pytest.raises(ConfigError, match=r"'model\.SFI_layer': expected layer indices < model\.n_layers \(4\), "
                                          r"got \[1, 4\]"):
        load_config("synthetic", ["model.SFI_layer=[1, 4]"])


def test_a_bad_value_in_a_yaml_file_names_the_file_and_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("base: synthetic\noptim:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: config key 'optim\.lr': expected a finite number > 0 and "
                                          r"≤ 3.4e38 \(float32\), got nan"):
        load_config(str(p))
