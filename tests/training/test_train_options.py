"""Trainer options: bf16 autocast, gradient clipping, best-metric choice, ARIS with text inputs, errors."""
import math
import os

import numpy as np
import pytest
import torch

from train_helpers import tiny_overrides
from backend_marks import needs
from trgnet_fast.training import ConfigError, Trainer, load_checkpoint, load_config

SHORT = ["train.max_steps_per_epoch=1"]


def _fit(data, out, extra, epochs=1):
    cfg = load_config("synthetic", tiny_overrides(data, str(out), epochs=epochs, extra=SHORT + list(extra)))
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    return trainer, trainer.fit()


@pytest.mark.parametrize("backend", ["torch", pytest.param("cuda", marks=needs("cuda"))])
def test_bf16_autocast_and_grad_clip(tiny_data, tmp_path, backend):
    """bf16 autocast trains on the reference and on the fused layers (which take every tensor in bf16: the
    float32 master weights are cast for them, docs/training.md#bf16)."""
    trainer, row = _fit(tiny_data, tmp_path, ["train.bf16=true", "optim.grad_clip=0.5", "train.best_metric=Acc",
                                              f"model.backend={backend}"])
    assert math.isfinite(row["train_total"]) and row["val_Acc"] != ""
    assert trainer.criterion.backend == backend  # the loss's per-frame terms follow model.backend
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights
    assert load_checkpoint(os.path.join(tmp_path, "best.pt"))["best_metric"] == "Acc"


def test_mask_correct_mode_trains_and_is_kept_in_the_checkpoint(tiny_data, tmp_path):
    trainer, row = _fit(tiny_data, tmp_path, ["model.mask_mode=correct"])
    assert trainer.model.mask_mode == "correct" and math.isfinite(row["train_total"])
    assert load_checkpoint(os.path.join(tmp_path, "last.pt"))["model_kwargs"]["mask_mode"] == "correct"
    with pytest.raises(ConfigError, match="'model.mask_mode': expected one of"):
        load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path), extra=["model.mask_mode=exact"]))


def test_aris_terms_with_text_inputs(tiny_data, tmp_path):
    k, d = 10, 16
    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", rng.normal(size=(k, d)).astype(np.float32))
    tag = rng.uniform(size=(k, k)).astype(np.float32)
    np.save(tmp_path / "tag.npy", (tag + tag.T) / 2)
    np.save(tmp_path / "tjg.npy", np.eye(25, dtype=np.float32))
    trainer, row = _fit(tiny_data, tmp_path / "out", [f"text.action_embeddings={tmp_path / 'emb.npy'}",
                                                      f"text.action_graph={tmp_path / 'tag.npy'}",
                                                      f"text.joint_graph={tmp_path / 'tjg.npy'}"])
    assert trainer.text.use_aris_abs and trainer.text.use_aris_rel
    assert row["train_aris_abs"] > 0 and row["train_aris_rel"] > 0


def test_text_priors_from_the_encoder(tiny_data, tmp_path):
    """The default text config: TJG, action embeddings and TAG built from the descriptions by the real
    offline encoder (all-MiniLM-L6-v2, 384-d); the model's feature head takes the encoder's width."""
    from trgnet_fast.text import text_priors

    trainer, row = _fit(tiny_data, tmp_path / "out", ["text.joint_graph=text", "text.action_embeddings=text",
                                                      "text.action_graph=text", "text.text_dim=null",
                                                      "text.dataset=synthetic",
                                                      f"text.cache_dir={tmp_path / 'cache'}"])
    priors = text_priors("synthetic", class_names=trainer.class_names, cache_dir=tmp_path / "cache")
    assert trainer.text.use_aris_abs and trainer.text.use_aris_rel and trainer.text.text_dim == 384
    assert trainer.model.conv_feature.out_channels == 384
    assert np.allclose(trainer.joint_graph.cpu(), priors.joint_graph)
    assert np.allclose(trainer.criterion.action_graph.cpu(), priors.action_graph)
    assert row["train_aris_abs"] > 0 and row["train_aris_rel"] > 0


def test_published_embedding_files_replace_the_encoder(tiny_data, tmp_path, monkeypatch):
    """text.embeddings_dir with the published {dataset}_{joints,actions}_pool.npy: TJG and TAG are their
    distance graphs, the feature head takes their width, and no encoder is loaded."""
    from trgnet_fast.text import distance_graph, encoder

    rng = np.random.default_rng(1)
    joints, actions = rng.normal(size=(25, 12)).astype(np.float32), rng.normal(size=(10, 12)).astype(np.float32)
    np.save(tmp_path / "synthetic_joints_pool.npy", joints)
    np.save(tmp_path / "synthetic_actions_pool.npy", actions)
    loaded = []
    original = encoder.TextEncoder.load
    monkeypatch.setattr(encoder.TextEncoder, "load", lambda self: loaded.append(self) or original(self))
    trainer, _ = _fit(tiny_data, tmp_path / "out", [
        "text.joint_graph=text", "text.action_embeddings=text", "text.action_graph=text",
        "text.text_dim=null", "text.dataset=synthetic", f"text.embeddings_dir={tmp_path}"])
    assert not loaded and trainer.text.text_dim == 12
    assert np.allclose(trainer.joint_graph.cpu(), distance_graph(torch.from_numpy(joints)))
    assert np.allclose(trainer.criterion.action_graph.cpu(), distance_graph(torch.from_numpy(actions)))


def test_learned_joint_graph_trains_is_saved_and_resumed(tiny_data, tmp_path):
    """text.joint_graph=learned: the TJG initialises a graph that Adam updates; checkpoints carry it and
    --resume restores it."""
    extra = ["text.joint_graph=learned", "text.dataset=synthetic", f"text.cache_dir={tmp_path / 'cache'}"]
    trainer, _ = _fit(tiny_data, tmp_path / "out", extra)
    assert trainer.text.joint_graph_trainable
    saved = load_checkpoint(os.path.join(tmp_path / "out", "last.pt"))["joint_graph"]
    assert not np.allclose(saved, trainer.text.joint_graph)          # it moved away from the TJG
    assert np.allclose(saved, trainer.joint_graph.detach().cpu())

    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path / "out"), epochs=2,
                                                 extra=SHORT + extra))
    resumed = Trainer(cfg, resume=True, log=lambda m: None, progress=False)
    resumed.setup()
    assert np.allclose(resumed.joint_graph.detach().cpu(), saved)


def test_unknown_best_metric_is_reported(tiny_data, tmp_path):
    """Before training (a run without a validation split would never look at it), from the IoU thresholds."""
    with pytest.raises(ConfigError, match=r"'train.best_metric': expected a validation score, one of \['F1@10', "
                                          r"'F1@25', 'F1@50', 'F1@75', 'F1@90', 'Edit', 'Acc', 'BoundaryAcc'.*"
                                          r"got 'F1@33'"):
        _fit(tiny_data, tmp_path, ["train.best_metric=F1@33"])
    assert load_config("synthetic", ["train.best_metric=F1@33", "eval.iou_thresholds=[0.33]"])


def test_batch_larger_than_training_set(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="no training batch"):
        _fit(tiny_data, tmp_path, ["train.batch_size=64"])
