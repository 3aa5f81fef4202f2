"""Each vectorized loss term vs a straightforward loop implementation (float64)."""
import numpy as np
import pytest
import torch

from trgnet_fast.data.labels import IGNORE_INDEX as IGN
from trgnet_fast.losses import (aris_absolute, aris_relative, boundary_bce, boundary_pos_weight, cross_entropy,
                                extract_segments, gs_tmse, kl_loss, relative_similarity, segment_means)

F64 = dict(dtype=torch.float64)


def _close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("n,t", [(1, 1), (1, 9), (4, 17), (3, 40)])
def test_cross_entropy(ref, gen, n, t):
    k = 5
    labels, _ = ref.random_labels(n, t, k, gen, mid_ignore=True)
    labels[0, 0] = 1  # at least one non-ignored frame
    logits = torch.randn(n, k, t, generator=gen, **F64)
    vals = [-torch.log_softmax(logits[i, :, j], 0)[labels[i, j]]
            for i in range(n) for j in range(t) if labels[i, j] != IGN]
    _close(cross_entropy(logits, labels), torch.stack(vals).mean())
    w = torch.rand(k, generator=gen, **F64) + 0.5
    num = sum(w[labels[i, j]] * -torch.log_softmax(logits[i, :, j], 0)[labels[i, j]]
              for i in range(n) for j in range(t) if labels[i, j] != IGN)
    den = sum(w[labels[i, j]] for i in range(n) for j in range(t) if labels[i, j] != IGN)
    _close(cross_entropy(logits, labels, class_weight=w), num / den)


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp(min=1e-300))


@pytest.mark.parametrize("over", ["time", "classes"])
@pytest.mark.parametrize("mid_ignore", [False, True])
@pytest.mark.parametrize("n,t", [(1, 1), (1, 2), (1, 3), (1, 11), (4, 23), (3, 1), (5, 40)])
def test_gstmse_value_and_gradient_match_published_loop(ref, gen, over, mid_ignore, n, t):
    """Value and logits gradient vs the per-sample, per-term loop of the published code (float64)."""
    k, c, v = 4, 3, 5
    labels, _ = ref.random_labels(n, t, k, gen, mid_ignore=mid_ignore)
    # large logits so the clamp at 16 is hit
    logits = 4 * torch.randn(n, k, t, generator=gen, **F64)
    x = 0.3 * torch.randn(n, c, v, t, generator=gen, **F64)
    z1, z2 = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    got, expect = gs_tmse(z1, x, labels, log_softmax_over=over), ref.gstmse_loop(z2, x, labels, over=over)
    _close(got, expect, tol=1e-12)
    if expect.requires_grad:
        got.backward()
        expect.backward()
        assert _rel(z1.grad, z2.grad) <= 1e-12
    else:  # no sample with two valid frames: nothing to learn
        assert got == 0


def test_gstmse_default_is_the_published_time_axis(ref, gen):
    labels, _ = ref.random_labels(3, 30, 5, gen, mid_ignore=True)
    logits = torch.randn(3, 5, 30, generator=gen, **F64)
    x = torch.randn(3, 2, 4, 30, generator=gen, **F64)
    assert gs_tmse(logits, x, labels) == gs_tmse(logits, x, labels, log_softmax_over="time")
    with pytest.raises(ValueError, match="log_softmax_over"):
        gs_tmse(logits, x, labels, log_softmax_over="frames")


def _video_labels(n, t, k, gen):
    """(N, T) labels shaped like real videos: segments of 20-60 frames, right padding 255 (row 0 full)."""
    labels = torch.full((n, t), IGN, dtype=torch.long)
    for i in range(n):
        length = t if i == 0 else int(torch.randint(t // 2, t + 1, (1,), generator=gen))
        pos = 0
        while pos < length:
            run = int(torch.randint(20, 61, (1,), generator=gen))
            labels[i, pos:min(pos + run, length)] = int(torch.randint(0, k, (1,), generator=gen))
            pos += run
    return labels


def test_time_and_class_axis_differ_on_peaked_logits(gen):
    """The two normalisations are different objectives. On the peaked logits of a confident, right model
    (+8 on the true class, unit noise) and video-like labels the value differs by 24-39 % and the gradient
    by 79-150 % (relative norm) over 1,000 seeds; asserted: > 15 % and > 50 %."""
    k, n, t = 6, 4, 300
    labels = _video_labels(n, t, k, gen)
    z = torch.randn(n, k, t, generator=gen, **F64)
    z.scatter_add_(1, labels.clamp(max=k - 1)[:, None, :], torch.full((n, 1, t), 8.0, **F64))
    x = 0.1 * torch.randn(n, 3, 5, t, generator=gen, **F64)
    z_t, z_c = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    g_t = gs_tmse(z_t, x, labels, log_softmax_over="time")
    g_c = gs_tmse(z_c, x, labels, log_softmax_over="classes")
    assert abs(float((g_t - g_c).detach())) > 0.15 * float(g_c.detach())
    g_t.backward()
    g_c.backward()
    assert _rel(z_t.grad, z_c.grad) > 0.5


def test_gstmse_grad_and_float32(ref, gen):
    labels, _ = ref.random_labels(3, 30, 4, gen, mid_ignore=True)
    logits = torch.randn(3, 4, 30, generator=gen, requires_grad=True)
    x = torch.randn(3, 2, 5, 30, generator=gen)
    for over in ("time", "classes"):
        logits.grad = None
        out = gs_tmse(logits, x, labels, log_softmax_over=over)
        expect = ref.gstmse_loop(logits.detach().double(), x.double(), labels, over=over)
        assert out.dtype == torch.float32
        assert abs(out.double() - expect) <= 1e-5 * abs(expect)
        out.backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
        # ignored frames receive no gradient
        assert torch.all(logits.grad[:, 0, :][labels == IGN] == 0)


@pytest.mark.parametrize("n,t", [(1, 1), (2, 9), (5, 31)])
def test_boundary_bce(ref, gen, n, t):
    _, lengths = ref.random_labels(n, t, 3, gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]
    b = 3 * torch.randn(n, 1, t, generator=gen, **F64)
    y = (torch.rand(n, 1, t, generator=gen) < 0.2).double() * mask
    for pw in (1.0, 37.5):
        _close(boundary_bce(b, y, mask, pw), ref.bce_loop(b, y, mask, pw))
        _close(boundary_bce(b, y, mask.double(), torch.tensor([pw], **F64)), ref.bce_loop(b, y, mask, pw))


def test_boundary_pos_weight():
    arrays = [np.array([0, 1, 0, 0]), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])]
    assert boundary_pos_weight(arrays) == 10 / 3
    # the published int64 cast: 0.5 and -0.5 count as negatives, 1.5 as a positive (a float sum would give
    # 12 / 3.5); generators are accepted
    soft = [np.array([0.5, 1.0, 0.5, 0.0, -0.5], np.float32), np.array([1.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0])]
    assert boundary_pos_weight(a for a in soft) == 12 / 2
    assert boundary_pos_weight([np.array([True, False, False])], sources=["b.npy"]) == 3.0
    for bad, shown in ((2.0, "2.0"), (-1.0, "-1.0"), (np.nan, "nan"), (np.inf, "inf"), (7, "7")):
        arr = np.array([1, 0, bad], dtype=type(bad) if isinstance(bad, int) else np.float64)
        with pytest.raises(ValueError, match=rf"gt_boundary_arr/v1\.npy: expected boundary values that cast "
                                             rf"to 0 or 1 .*\[{shown}\]"):
            boundary_pos_weight([np.array([1.0, 0.0]), arr], sources=["gt_boundary_arr/v0.npy",
                                                                      "gt_boundary_arr/v1.npy"])
    with pytest.raises(ValueError, match=r"boundary array 0: expected numeric"):
        boundary_pos_weight([np.array(["1", "0"])])
    with pytest.raises(ValueError, match=r"sources: expected one name per boundary array \(2\), got 1"):
        boundary_pos_weight([np.ones(2), np.ones(2)], sources=["a.npy"])
    with pytest.raises(ValueError, match="boundary_arrays"):
        boundary_pos_weight([np.zeros(5)])
    with pytest.raises(ValueError, match="boundary_arrays"):
        boundary_pos_weight([np.full(4, 0.99)])  # all cast to 0
    with pytest.raises(ValueError, match="boundary_arrays"):
        boundary_pos_weight([])


@pytest.mark.parametrize("m", [0, 1, 2, 7])
def test_kl_loss(ref, gen, m):
    p = torch.randn(m, m, generator=gen, **F64)
    y = torch.rand(m, m, generator=gen, **F64)
    _close(kl_loss(p, y), ref.kl_rows(p, y))
    # the published formula: M · mean q (log q − log p)
    if m:
        q = torch.softmax(10 * y, 1)
        _close(kl_loss(p, y), m * (q * (q.log() - torch.log_softmax(p, 1))).mean())


def _segment_batch(ref, gen, n, t, k, d, quirks=False, mid_ignore=True):
    labels, _ = ref.random_labels(n, t, k, gen, mid_ignore=mid_ignore)
    feats = torch.randn(n, d, t, generator=gen, **F64)
    segs = extract_segments(labels, published_quirks=quirks)
    f = segment_means(feats, segs)
    loop_segs = ref.scan_published(labels) if quirks else ref.scan_corrected(labels)
    f_loop = ref.slice_means(feats, loop_segs)
    lab_loop = torch.tensor([s[3] for s in loop_segs], dtype=torch.long)
    return segs, f, f_loop, lab_loop


@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("n,t", [(1, 5), (4, 30), (2, 60)])
def test_aris_absolute(ref, gen, quirks, n, t):
    k, d = 6, 12
    segs, f, f_loop, lab_loop = _segment_batch(ref, gen, n, t, k, d, quirks)
    emb = torch.randn(k, d, generator=gen, **F64)
    scale = torch.tensor([2.659], **F64)
    _close(aris_absolute(f, segs.label, emb, scale), ref.aris_abs_loop(f_loop, lab_loop, emb, scale))


@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("n,t", [(1, 5), (4, 30), (2, 60)])
def test_aris_relative(ref, gen, quirks, n, t):
    k, d = 6, 12
    segs, f, f_loop, lab_loop = _segment_batch(ref, gen, n, t, k, d, quirks)
    a = torch.rand(k, k, generator=gen, **F64)
    tag = (a + a.T) / 2
    tag.fill_diagonal_(1.0)
    _close(aris_relative(f, segs.label, tag), ref.aris_rel_loop(f_loop, lab_loop, tag))


def test_aris_single_segment_and_identical_features(gen):
    """M = 1 (and all-equal features: max d = 0): P = 1, finite values and gradients."""
    emb = torch.randn(3, 4, generator=gen)
    tag = torch.eye(3)
    for f in (torch.randn(1, 4, generator=gen), torch.ones(3, 4)):
        f = f.clone().requires_grad_(True)
        lab = torch.arange(f.shape[0])
        scale = torch.tensor([2.659], requires_grad=True)
        assert torch.equal(relative_similarity(f), torch.ones(f.shape[0], f.shape[0]))
        loss = aris_absolute(f, lab, emb, scale) + aris_relative(f, lab, tag)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(f.grad).all() and torch.isfinite(scale.grad).all()
    # M = 1 exactly: both KL terms are 0 (a 1×1 softmax is 1)
    f = torch.randn(1, 4, generator=gen)
    assert aris_absolute(f, torch.tensor([1]), emb, torch.tensor([2.0])) == 0
    assert aris_relative(f, torch.tensor([1]), tag) == 0


def test_aris_one_valid_segment_among_padding_slots(gen):
    """One real segment and padding slots (the collate's static segment bound; two one-segment videos under the
    published scan): max d over valid pairs is 0, yet the padding pairs have d > 0 — both ARIS terms are 0, as for
    the lone segment without slots, with finite gradients (was NaN: d / tiny overflowed in the padding pairs)."""
    f = torch.randn(4, 8, generator=gen, requires_grad=True)
    labels = torch.tensor([1, 0, 0, 0])
    valid = torch.tensor([True, False, False, False])
    tag = torch.eye(3)
    assert torch.isfinite(relative_similarity(f, valid)).all()
    loss = aris_relative(f, labels, tag, valid) + aris_absolute(f, labels, torch.randn(3, 8, generator=gen),
                                                                  torch.tensor([2.0]), valid)
    assert loss == 0
    loss.backward()
    assert torch.isfinite(f.grad).all() and torch.equal(f.grad[1:], torch.zeros(3, 8))


def test_aris_empty():
    f = torch.zeros(0, 4)
    lab = torch.zeros(0, dtype=torch.long)
    assert aris_absolute(f, lab, torch.randn(3, 4), torch.tensor([2.0])) == 0
    assert aris_relative(f, lab, torch.eye(3)) == 0


def test_relative_distance_gradient_matches_loop(ref, gen):
    """Gradients through cdist (incl. repeated features → zero distances off the diagonal)."""
    f = torch.randn(5, 6, generator=gen, **F64)
    f[3] = f[1]
    lab = torch.tensor([0, 1, 2, 1, 0])
    tag = torch.rand(3, 3, generator=gen, **F64)
    f1 = f.clone().requires_grad_(True)
    f2 = f.clone().requires_grad_(True)
    aris_relative(f1, lab, tag).backward()
    ref.aris_rel_loop(f2, lab, tag).backward()
    assert torch.isfinite(f1.grad).all()
    _close(f1.grad, torch.nan_to_num(f2.grad))


@pytest.mark.parametrize("over", ["time", "classes"])
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_stacked_stages_are_the_mean_over_stages(ref, gen, over, stages):
    """gs_tmse of (S, N, K, T) stacked logits and boundary_bce of (S, N, 1, T) stacked boundary logits (the loss's
    stages as one batch) equal the mean of the per-stage values, and so do their gradients (float64)."""
    n, k, t = 3, 4, 17
    labels, lengths = ref.random_labels(n, t, k, gen, mid_ignore=True)
    mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]
    x = torch.randn(n, 2, 5, t, generator=gen, **F64)
    z = (3 * torch.randn(stages, n, k, t, generator=gen, **F64)).requires_grad_(True)
    b = (2 * torch.randn(stages, n, 1, t, generator=gen, **F64)).requires_grad_(True)
    y = (torch.rand(n, 1, t, generator=gen) < 0.3).double() * mask
    got = gs_tmse(z, x, labels, log_softmax_over=over) + boundary_bce(b, y, mask, 7.5)
    expect = sum(gs_tmse(z[s], x, labels, log_softmax_over=over) + boundary_bce(b[s], y, mask, 7.5)
                 for s in range(stages)) / stages
    _close(got, expect, tol=1e-12)
    got_grads = torch.autograd.grad(got, (z, b))
    for g, e in zip(got_grads, torch.autograd.grad(expect, (z, b))):
        assert _rel(g, e) <= 1e-12
