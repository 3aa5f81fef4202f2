import pytest
import yaml

from trgnet_fast.training.config import PRESETS, ConfigError, apply_overrides, load_config, validate


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
    ("train.epochs=0", "expected ≥ 1"),
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
