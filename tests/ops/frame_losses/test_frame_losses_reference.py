"""The reference of the fused per-frame loss terms (``trgnet_fast/ops/frame_losses/reference.py``) against the loss's
own terms (``trgnet_fast/losses/terms.py``: F.nll_loss's CE, GS-TMSE on either axis, BCEWithLogits with pos_weight,
themselves tested against loop transcriptions of the published code in tests/losses) on the target builder's
weights and pair indices; the two constructions of the pair indices agree; the CE frame weights. float64, fresh
random inputs."""
from __future__ import annotations

import pytest
import torch

from op_checks import rel_err
from trgnet_fast.losses.targets import LossTargetBuilder
from trgnet_fast.losses.terms import (boundary_bce, cross_entropy, cross_entropy_frame_weight, gs_tmse,
                                      gs_tmse_pairs, gs_tmse_weights)
from trgnet_fast.ops.frame_losses.reference import frame_losses_reference
from trgnet_fast.ops.frame_losses.spec import IGNORED, _labels, _pairs, size


def _batch(n, k, t, generator):
    labels = torch.randint(0, k, (n, t), generator=generator)
    labels[0, 3:6] = IGNORED
    labels[1, -4:] = IGNORED
    labels[2, :-1] = IGNORED  # one labelled frame
    labels[3, :2] = IGNORED
    return labels


@pytest.mark.parametrize("class_weight", [False, True], ids=["unweighted", "class-weights"])
@pytest.mark.parametrize("time_axis", [True, False], ids=["time", "classes"])
def test_reference_equals_the_loss_terms(time_axis, class_weight):
    gen = torch.Generator().manual_seed(torch.seed())
    s, r, n, k, t = 2, 3, 4, 7, 31
    labels = _batch(n, k, t, gen)
    mask = (labels != IGNORED)[:, None]
    weights = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5 if class_weight else None
    targets = LossTargetBuilder(None, use_aris_abs=False, use_aris_rel=False, dtype=torch.float64,
                                class_weight=weights)(labels, mask)
    x = torch.randn(n, 3, 5, t, generator=gen, dtype=torch.float64)
    boundary = (torch.rand(n, 1, t, generator=gen) < 0.2).double()
    pos_weight = torch.tensor(3.7, dtype=torch.float64)
    z = (3 * torch.randn(s, n, k, t, generator=gen, dtype=torch.float64)).requires_grad_(True)
    b = (2 * torch.randn(r, n, 1, t, generator=gen, dtype=torch.float64)).requires_grad_(True)

    expected = torch.stack([
        cross_entropy(z.flatten(0, 1), labels.expand(s, n, t).flatten(0, 1), weights),
        gs_tmse(z, x, labels, log_softmax_over="time" if time_axis else "classes", pairs=targets.pairs),
        boundary_bce(b, boundary, mask, pos_weight, targets.boundary_weight)])
    got = frame_losses_reference(z, labels, targets.ce_weight, targets.pairs.next_frame[:, 0],
                                 targets.pairs.previous_frame, gs_tmse_weights(x, targets.pairs), b[:, :, 0],
                                 boundary[:, 0], targets.boundary_weight[:, 0], pos_weight.reshape(1),
                                 time_axis=time_axis)
    assert rel_err(got, expected) <= 1e-14
    cotangent = torch.randn(3, generator=gen, dtype=torch.float64)
    for g, e in zip(torch.autograd.grad(got, (z, b), cotangent), torch.autograd.grad(expected, (z, b), cotangent)):
        assert rel_err(g, e) <= 1e-13


def test_pair_indices_of_the_builder_and_of_the_spec_agree():
    """gs_tmse_pairs (a running minimum / maximum) and the op spec's per-row construction (nonzero): the same next
    and previous labelled frames, inverse of each other on the pairs."""
    gen = torch.Generator().manual_seed(torch.seed())
    labels = _labels(size(1, 1, 5, 6, 40), gen)
    labels[3, ::3] = IGNORED
    pairs = gs_tmse_pairs(labels)
    next_frame, previous_frame = _pairs(labels)
    assert torch.equal(pairs.next_frame[:, 0], next_frame) and torch.equal(pairs.previous_frame, previous_frame)
    own = torch.arange(labels.shape[1])
    starts = next_frame != own
    assert torch.equal(previous_frame.gather(1, next_frame)[starts], own.expand_as(labels)[starts])


def test_cross_entropy_frame_weight():
    """class_weight[y] over their sum on the labelled frames, 0 on ignored ones; NaN when no frame is labelled (as
    F.nll_loss's mean)."""
    labels = torch.tensor([[0, 2, IGNORED], [1, IGNORED, 2]])
    weights = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    got = cross_entropy_frame_weight(labels, weights, dtype=torch.float64)
    assert torch.equal(got, torch.tensor([[1, 4, 0], [2, 0, 4]], dtype=torch.float64) / 11)
    plain = cross_entropy_frame_weight(labels)
    assert plain.dtype == torch.float32 and torch.equal(plain, (labels != IGNORED).float() / 4)
    assert torch.isnan(cross_entropy_frame_weight(torch.full((2, 3), IGNORED))).all()


def test_the_reference_defaults_to_the_published_loss():
    """threshold 4 and the time-axis log-softmax of GS-TMSE, as the public function's defaults."""
    inputs = {k: v for k, v in _spec_inputs().items() if k not in ("threshold", "time_axis")}
    published = frame_losses_reference(**inputs, threshold=4.0, time_axis=True)
    assert torch.equal(frame_losses_reference(**inputs), published)
    assert not torch.equal(frame_losses_reference(**inputs, time_axis=False)[1], published[1])


def _spec_inputs():
    from trgnet_fast.ops.frame_losses.spec import make_inputs
    return make_inputs(size(2, 1, 3, 6, 20), torch.float64, "cpu", torch.Generator().manual_seed(torch.seed()))
