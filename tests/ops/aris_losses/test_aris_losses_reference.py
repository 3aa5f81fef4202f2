"""The reference of the fused ARIS terms (``trgnet_fast/ops/aris_losses/reference.py``) against the loss's own terms
(``trgnet_fast/losses/terms.py``: aris_absolute and aris_relative on segment_means, themselves tested against loop
transcriptions of the published code in tests/losses) on the target builder's segments and KL targets; the op spec's
own construction of the slots and targets agrees with the builder's; the KL targets' bias and row count are the rule
the op derives from segment_valid; with the feature head, the terms of the published order (every frame projected by
the head, then averaged). float64, fresh random inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from op_checks import rel_err
from trgnet_fast.losses.segments import extract_segments, segment_means
from trgnet_fast.losses.targets import LossTargetBuilder
from trgnet_fast.losses.terms import aris_absolute, aris_relative
from trgnet_fast.ops.aris_losses.reference import aris_losses_reference, dropped_bias
from trgnet_fast.ops.aris_losses.spec import IGNORED, _labels, kl_target, make_inputs, size, slots


def _batch(generator, n=4, k=5, t=37):
    labels = _labels(size(n, 1, t, k, run=3), generator)
    labels[0, ::11] = IGNORED  # single ignored frames inside a row
    return labels, (labels != IGNORED)[:, None], torch.rand(k, k, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("spare", [None, 0, 6], ids=["counted", "exact-bound", "padding-slots"])
@pytest.mark.parametrize("published", [True, False], ids=["published", "every-segment"])
def test_reference_equals_the_loss_terms(published, spare):
    gen = torch.Generator().manual_seed(torch.seed())
    labels, mask, tag = _batch(gen)
    found = extract_segments(labels, published_quirks=published).num_segments
    bound = None if spare is None else found + spare
    targets = LossTargetBuilder(tag, published, dtype=torch.float64)(labels, mask, bound)
    segs = targets.segments
    d, k = 9, tag.shape[0]
    e = torch.randn(labels.shape[0], d, labels.shape[1], generator=gen, dtype=torch.float64, requires_grad=True)
    unit = F.normalize(torch.randn(k, d, generator=gen, dtype=torch.float64), dim=1)
    scale = torch.tensor([2.659], dtype=torch.float64, requires_grad=True)

    f = segment_means(e, segs)
    expected = torch.stack([
        aris_absolute(f, segs.label, unit, scale, segs.valid, targets.absolute, embeddings_normalized=True),
        aris_relative(f, segs.label, tag, segs.valid, targets.relative, targets.unpaired)])
    got = aris_losses_reference(e, segs.frame_segment, segs.video, segs.start, segs.count.double(), segs.valid,
                                segs.label, unit, scale, targets.absolute.weight, targets.absolute.log_weight,
                                targets.relative.weight, targets.relative.log_weight)
    assert rel_err(got, expected) <= 1e-14
    cotangent = torch.randn(2, generator=gen, dtype=torch.float64)
    for g, x in zip(torch.autograd.grad(got, (e, scale), cotangent),
                    torch.autograd.grad(expected, (e, scale), cotangent)):
        assert rel_err(g, x) <= 1e-13


def test_max_distance_ties_share_the_gradient_as_the_loss():
    """Two segments of equal means, far from the rest: four entries share the largest distance; the reference's
    gradient splits the max's share between them as the loss's torch.max does (and 0 at their zero distance)."""
    gen = torch.Generator().manual_seed(torch.seed())
    labels, mask, tag = _batch(gen, n=3, t=30)
    targets = LossTargetBuilder(tag, dtype=torch.float64)(labels, mask, None)
    segs = targets.segments
    e = torch.randn(labels.shape[0], 4, labels.shape[1], generator=gen, dtype=torch.float64)
    far = (10 * torch.randn(4, generator=gen, dtype=torch.float64)).round()  # integers: exact means
    for i in (0, 1):
        e[segs.video[i], :, segs.start[i]:segs.end[i] + 1] = far[:, None]
    e.requires_grad_(True)
    f = segment_means(e, segs)
    d = torch.cdist(f, f)
    assert int((d == d.max()).sum()) == 4
    expected = aris_relative(f, segs.label, tag, segs.valid, targets.relative, targets.unpaired)
    got = aris_losses_reference(e, segs.frame_segment, segs.video, segs.start, segs.count.double(), segs.valid,
                                segs.label, F.normalize(torch.ones(5, 4, dtype=torch.float64), dim=1),
                                torch.ones(1, dtype=torch.float64), targets.absolute.weight,
                                targets.absolute.log_weight, targets.relative.weight, targets.relative.log_weight)[1]
    assert rel_err(got, expected) <= 1e-14
    assert rel_err(torch.autograd.grad(got, e)[0], torch.autograd.grad(expected, e)[0]) <= 1e-13


def test_slots_and_targets_of_the_spec_and_of_the_builder_agree():
    """The spec's per-row scan of the published rule (spare padding slots after the segments) and extract_segments (a vectorised scan):
    the same slots; its KL targets and the builder's: the same weights; the builder's bias and row count are what
    the op derives from segment_valid (dropped_bias, max(valid slots, 1))."""
    gen = torch.Generator().manual_seed(torch.seed())
    labels, mask, tag = _batch(gen)
    frame_segment, video, start, count, label, valid = slots(labels, 4)
    targets = LossTargetBuilder(tag, dtype=torch.float64)(labels, mask, count.shape[0])
    segs = targets.segments
    assert torch.equal(frame_segment, segs.frame_segment) and torch.equal(video, segs.video)
    assert torch.equal(start, segs.start) and torch.equal(count.float(), segs.count)
    assert torch.equal(label, segs.label) and torch.equal(valid, segs.valid) and not valid.all()
    same_class = (label[:, None] == label[None, :]).double()
    for ours, theirs in ((kl_target(same_class, valid), targets.absolute),
                         (kl_target(tag[label[:, None], label[None, :]], valid), targets.relative)):
        assert rel_err(ours[0], theirs.weight) <= 1e-15 and rel_err(ours[1], theirs.log_weight) <= 1e-15
        assert torch.equal(theirs.bias, dropped_bias(valid, torch.float64))
        assert theirs.rows == max(int(valid.sum()), 1)


@pytest.mark.parametrize("channels", [1, 6, 40])
def test_feature_head_equals_averaging_the_projected_frames(channels):
    """The reference with the feature head (each segment's mean of x projected: W m_i + b) against the reference
    without it on e0 = conv1d(x, W, b) over every frame (the model's conv_feature, then the segment means, as
    published): the same terms and gradients of x, W, b and logit_scale (the mean is linear)."""
    gen = torch.Generator().manual_seed(torch.seed())
    inputs = make_inputs(size(4, 9, 37, 5, head=channels), torch.float64, "cpu", gen)
    names = ("features", "head_weight", "head_bias", "logit_scale")
    leaves = [inputs[n].clone().requires_grad_(True) for n in names]
    x, weight, bias, scale = leaves
    headed = aris_losses_reference(**inputs | dict(zip(names, leaves)))
    plain = {k: v for k, v in inputs.items() if k not in ("head_weight", "head_bias")}
    projected = aris_losses_reference(**plain | {"features": F.conv1d(x, weight[..., None], bias),
                                                 "logit_scale": scale})
    assert rel_err(headed, projected) <= 1e-13
    cotangent = torch.randn(2, generator=gen, dtype=torch.float64)
    for name, g, expected in zip(names, torch.autograd.grad(headed, leaves, cotangent),
                                 torch.autograd.grad(projected, leaves, cotangent)):
        assert rel_err(g, expected) <= 1e-12, name
