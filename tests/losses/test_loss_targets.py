"""The loss's labels-only part built beforehand (docs/model.md#loss-targets): the same loss, built on the CPU by
the collate, moved with the batch, checked when it does not fit."""
import pickle

import pytest
import torch

from trgnet_fast.data import collate, segment_capacity
from trgnet_fast.host_sync import NoHostSync
from trgnet_fast.losses import LossTargetBuilder, LossTargets, TRGNetLoss
from trgnet_fast.training.transfer import to_device

from backend_marks import needs

K, D = 6, 16


def _batch(ref, gen, n, t, dtype):
    labels, lengths = ref.random_labels(n, t, K, gen, mid_ignore=True)
    mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]
    boundary = (torch.rand(n, 1, t, generator=gen) < 0.2).to(dtype) * mask
    x = torch.randn(n, 3, 5, t, generator=gen, dtype=dtype) * mask[:, :, None, :]

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(True)

    outputs = ([leaf(n, K, t), leaf(n, K, t)], [leaf(n, 1, t), leaf(n, 1, t), leaf(n, 1, t)],
               [leaf(n, D, t), leaf(n, D, t)], torch.tensor([2.3], dtype=dtype).requires_grad_(True))
    return outputs, x, labels, boundary, mask


def _loss(gen, dtype, **options):
    emb = torch.randn(K, D, generator=gen, dtype=torch.float64)
    d = torch.cdist(emb, emb)
    return TRGNetLoss(emb, 1 - d / d.max(), 9.5, **options).to(dtype)


def _leaves(outputs):
    logits, bounds, feats, scale = outputs
    return [*logits, *bounds, feats[0], scale]


@pytest.mark.parametrize("with_x", [True, False], ids=["pair-weights-built", "pair-weights-from-the-loss-x"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("quirks", [True, False])
def test_targets_built_beforehand_give_the_same_loss(ref, gen, dtype, quirks, with_x):
    """Targets from target_builder() — on the CPU, through a pickle (as a loader worker gets the builder) — equal the
    loss building its own: every term and every gradient bit for bit (the same ops on the same values). Built with x
    (as the training collate builds them) they carry the GS-TMSE pair weights and the loss needs no x; built without,
    the loss computes the weights from its x."""
    outputs, x, labels, boundary, mask = _batch(ref, gen, 4, 37, dtype)
    loss = _loss(gen, dtype, published_quirks=quirks)
    bound = segment_capacity(labels)
    builder = pickle.loads(pickle.dumps(loss.target_builder(dtype)))
    targets = builder(labels, mask, bound, x if with_x else None)
    assert (targets.pair_weight is not None) == with_x
    own = loss(outputs, x, labels, boundary, mask, max_segments=bound)
    given = loss(outputs, None if with_x else x, labels, boundary, mask, targets=targets)
    for name in own:
        assert torch.equal(own[name], given[name]), name
    for a, b in zip(torch.autograd.grad(own["total"], _leaves(outputs)),
                    torch.autograd.grad(given["total"], _leaves(outputs))):
        assert torch.equal(a, b)


def test_the_collate_builds_the_targets_of_its_batch(gen):
    loss = _loss(gen, torch.float32)
    items = [{"feature": torch.randn(3, 5, t), "label": torch.randint(0, K, (t,)), "boundary": torch.zeros(t),
              "name": str(t)} for t in (9, 14, 4)]
    batch = collate(items, loss_targets=loss.target_builder())
    expected = loss.target_builder()(batch["labels"], batch["mask"], batch["max_segments"], batch["x"])
    got_leaves, expected_leaves = (torch.utils._pytree.tree_leaves(v) for v in (batch["loss_targets"], expected))
    assert len(got_leaves) == len(expected_leaves) > 10
    assert all(torch.equal(a, b) for a, b in zip(got_leaves, expected_leaves))
    assert batch["loss_targets"].segments.num_segments == batch["max_segments"]
    assert "loss_targets" not in collate(items)


def test_targets_move_as_one(ref, gen):
    _, x, labels, _, mask = _batch(ref, gen, 2, 11, torch.float32)
    targets = _loss(gen, torch.float32).target_builder()(labels, mask, segment_capacity(labels), x)
    moved = to_device(targets, "meta")  # as the trainer moves them (trgnet_fast/training/transfer.py)
    assert isinstance(moved, LossTargets)
    leaves = torch.utils._pytree.tree_leaves(moved)
    assert leaves and all(t.device.type == "meta" for t in leaves)
    assert [t.shape for t in leaves] == [t.shape for t in torch.utils._pytree.tree_leaves(targets)]


@pytest.mark.parametrize("backend", ["torch", *(pytest.param(b, marks=needs(b)) for b in ("cuda", "triton"))])
def test_a_step_with_targets_needs_no_bound_and_no_host_sync(ref, gen, backend):
    """Also with the per-frame terms fused (frame_losses on the native C++ kernels and on Triton's interpreter)."""
    outputs, x, labels, boundary, mask = _batch(ref, gen, 3, 40, torch.float32)
    loss = _loss(gen, torch.float32, backend=backend)
    targets = loss.target_builder()(labels, mask, segment_capacity(labels))
    with NoHostSync():
        loss(outputs, x, labels, boundary, mask, targets=targets)["total"].backward()


def test_targets_that_do_not_fit_are_refused(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 3, 20, torch.float32)
    loss = _loss(gen, torch.float32)
    other = _batch(ref, gen, 3, 21, torch.float32)
    with pytest.raises(ValueError, match=r"targets: expected the targets of labels of shape \(3, 20\)"):
        loss(outputs, x, labels, boundary, mask,
             targets=loss.target_builder()(other[2], other[4], segment_capacity(other[2])))
    no_relative = _loss(gen, torch.float32, use_aris_rel=False).target_builder()(labels, mask,
                                                                                segment_capacity(labels))
    with pytest.raises(ValueError, match="targets: built for other ARIS switches"):
        loss(outputs, x, labels, boundary, mask, targets=no_relative)
    with pytest.raises(ValueError, match="targets: expected LossTargets"):
        loss(outputs, x, labels, boundary, mask, targets={"pairs": None})
    without_x = loss.target_builder()(labels, mask, segment_capacity(labels))
    with pytest.raises(ValueError, match=r"x: needed \(the GS-TMSE similarity source\) when the targets carry no pair"):
        loss(outputs, None, labels, boundary, mask, targets=without_x)
    with pytest.raises(ValueError, match=r"x: needed \(the GS-TMSE similarity source\) when no targets are given"):
        loss(outputs, None, labels, boundary, mask)
    other_weights = without_x._replace(pair_weight=torch.zeros(3, 21))
    with pytest.raises(ValueError, match=r"targets: expected pair weights of shape \(3, 20\)"):
        loss(outputs, x, labels, boundary, mask, targets=other_weights)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, C, V, T\) with \(N, T\) = \(3, 20\)"):
        loss.target_builder()(labels, mask, 8, x[:, :, :, :-1])


def test_the_builder_needs_the_action_graph_for_the_relative_term():
    with pytest.raises(ValueError, match="action_graph"):
        LossTargetBuilder(None, use_aris_rel=True)
    assert LossTargetBuilder(None, use_aris_rel=False)(torch.zeros(1, 3, dtype=torch.long),
                                                       torch.ones(1, 1, 3, dtype=torch.bool), 8).relative is None


def test_the_builder_defaults_are_the_published_loss():
    builder = LossTargetBuilder(torch.ones(K, K) / K)
    assert (builder.published_quirks, builder.use_aris_abs, builder.use_aris_rel) == (True, True, True)


@pytest.mark.parametrize("use_abs, use_rel", [(True, False), (False, True), (True, True), (False, False)])
def test_each_aris_switch_builds_only_its_targets(use_abs, use_rel):
    builder = LossTargetBuilder(torch.ones(K, K) / K, use_aris_abs=use_abs, use_aris_rel=use_rel)
    targets = builder(torch.tensor([[0, 0, 1, 1, 2]]), torch.ones(1, 1, 5, dtype=torch.bool), 8)
    assert (targets.absolute is not None, targets.relative is not None) == (use_abs, use_rel)
    assert (targets.segments is not None) == (use_abs or use_rel)
    assert (targets.unpaired is not None) == (use_abs or use_rel)


def test_derived_buffers_follow_dtype_changes(gen):
    """t̂ and pos_weight's float32 rounding are rebuilt after .double(): a float64 loss uses exact values."""
    loss = _loss(gen, torch.float32).double()
    assert loss.unit_action_embeddings.dtype == torch.float64
    expected = torch.nn.functional.normalize(loss.action_embeddings, dim=1)
    assert torch.equal(loss.unit_action_embeddings, expected)
    assert loss.pos_weight_float32.dtype == torch.float32 and float(loss.pos_weight_float32) == 9.5


def test_the_builder_folds_the_class_weights_into_the_ce_frame_weights(gen):
    """ce_weight (the fused loss's CE input): the loss's class weight of each labelled frame's label over their sum,
    0 on ignored frames; previous_frame: the inverse of next_frame on the pairs."""
    labels = torch.tensor([[0, 3, 255, 5, 5], [255, 2, 2, 255, 255]])
    weights = torch.rand(K, generator=gen) + 0.5
    targets = _loss(gen, torch.float32, class_weight=weights).target_builder()(labels, (labels != 255)[:, None], 8)
    expected = torch.where(labels != 255, weights[labels.clamp(max=K - 1)], 0.0)
    assert torch.allclose(targets.ce_weight, expected / expected.sum(), rtol=1e-6, atol=0)
    assert torch.equal(targets.pairs.next_frame[:, 0], torch.tensor([[1, 3, 2, 4, 4], [0, 2, 2, 3, 4]]))
    assert torch.equal(targets.pairs.previous_frame, torch.tensor([[0, 0, 2, 1, 3], [0, 1, 1, 3, 4]]))
