"""Helpers shared by the training tests (a uniquely named module: `conftest` is ambiguous on sys.path)."""
import numpy as np
import pytest
import torch

from trgnet_fast.training import Trainer, load_config
from trgnet_fast.training.trainer import LOSS_KEYS

TINY_MODEL = ["model.n_features=16", "model.n_layers=2", "model.n_refine_layers=2", "model.n_stages_asb=2",
              "model.n_stages_brb=2", "text.text_dim=16", "text.joint_graph=physical",
              "text.action_embeddings=null", "text.action_graph=null"]


def tiny_overrides(data_dir, out_dir, epochs=2, extra=()):
    return [f"data.dir={data_dir}", f"output_dir={out_dir}", f"train.epochs={epochs}", "train.batch_size=2",
            "data.val_every=4", "optim.lr=0.003", *TINY_MODEL, *extra]


def setup_trainer(data_dir, out_dir, extra=()):
    """A set-up, quiet :class:`Trainer` of the synthetic preset with the tiny model (:func:`tiny_overrides`, 2 epochs)
    and the overrides ``extra``."""
    trainer = Trainer(load_config("synthetic", tiny_overrides(data_dir, str(out_dir), extra=extra)),
                      log=lambda m: None, progress=False)
    trainer.setup()
    return trainer


def text_files(tmp_path, k=10, d=16):
    """Overrides pointing at random action embeddings (k, d) and a symmetric TAG (k, k) in ``tmp_path``: every ARIS
    term on."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", rng.normal(size=(k, d)).astype(np.float32))
    tag = rng.uniform(size=(k, k)).astype(np.float32)
    np.save(tmp_path / "tag.npy", (tag + tag.T) / 2)
    return [f"text.action_embeddings={tmp_path / 'emb.npy'}", f"text.action_graph={tmp_path / 'tag.npy'}"]


def float64_step(trainer, batch) -> tuple:
    """(loss terms as floats, final logits, parameter gradients) of ``trainer.step`` (model + loss, float64 with
    ``trainer.step.double()``) on a collated ``batch``, after its backward."""
    trainer.step.zero_grad(set_to_none=True)
    losses, final = trainer.step(batch["x"].double(), batch["labels"], batch["boundary"], batch["mask"],
                                 trainer.joint_graph.double(), max_segments=batch["max_segments"],
                                 targets=batch["loss_targets"], packed=batch.get("packed"),
                                 loss_mask=batch.get("loss_mask"))
    losses["total"].backward()
    return ({k: float(v.detach()) for k, v in losses.items()}, final,
            {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})


def assert_same_step(expected: tuple, got: tuple, mask: torch.Tensor) -> None:
    """Two :func:`float64_step` results (final logits (N, K, T) of the same layout) equal within 1e-10: every loss
    term (the ARIS terms on), the final logits on the frames of ``mask`` (N, 1, T) and every parameter gradient."""
    (terms, final, grads), (got_terms, got_final, got_grads) = expected, got
    assert got_final.dtype == torch.float64 and terms["aris_abs"] > 0 and terms["aris_rel"] > 0
    for key in LOSS_KEYS:
        assert got_terms[key] == pytest.approx(terms[key], rel=1e-10), key
    assert float((got_final * mask - final * mask).norm() / (final * mask).norm()) <= 1e-10
    assert grads.keys() == got_grads.keys() and len(grads) > 50
    # floor: the biases before a batch-statistics BatchNorm have a gradient of exactly 0, left as rounding noise
    # (~1e-15 of the largest gradient)
    largest = max(float(g.norm()) for g in grads.values())
    for name, grad in grads.items():
        assert float((got_grads[name] - grad).norm()) <= 1e-10 * max(float(grad.norm()), 1e-4 * largest), name
