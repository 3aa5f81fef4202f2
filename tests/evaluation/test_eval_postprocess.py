"""Post-processing: refinement_with_boundary vs a direct loop, hand examples, relabeling, smoothing."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trgnet_fast.evaluation import (
    argmax_prediction,
    boundary_peaks,
    boundary_probabilities,
    gaussian_smoothing,
    refinement_with_boundary,
    relabeling,
)


# ----------------------------------------------------------------------- direct loop reference
def ref_refine(outputs, boundaries, masks, th=0.5):
    """Straight loop transcription of docs/model.md#inference-and-post-processing (published semantics incl.
    stale tie-break variable)."""
    outputs = np.asarray(outputs)
    preds = outputs.argmax(axis=1)
    b = np.asarray(boundaries)
    if not (b.min() >= 0 and b.max() <= 1):
        b = (1 / (1 + np.exp(-b))).astype(np.float32)
    mode = None
    for i in range(outputs.shape[0]):
        p = b[i][masks[i]].copy()
        p[p < th] = 0
        idx = [0] + [t for t in range(1, len(p) - 1) if p[t] > p[t - 1] and p[t] > p[t + 1]]
        idx.append(preds.shape[1])
        for j in range(len(idx) - 1):
            a, e = idx[j], idx[j + 1]
            count = np.bincount(preds[i, a:e])
            modes = np.where(count == count.max())[0]
            if len(modes) == 1:
                mode = modes[0]
            else:
                best, chosen = 0, None
                for m in modes:
                    s = outputs[i, m, a:e].sum()
                    if best < s:
                        chosen, best = m, s
                if chosen is None and mode is None:  # published: UnboundLocalError; ours: largest sum
                    chosen = modes[int(np.argmax([outputs[i, m, a:e].sum() for m in modes]))]
                mode = chosen if chosen is not None else mode
            preds[i, a:e] = mode
    return preds


def ref_relabel(pred, theta):
    p = np.array(pred).copy()
    last, cnt = p[0], 1
    j = 0
    for j in range(1, len(p)):
        if last == p[j]:
            cnt += 1
        else:
            if cnt > theta:
                cnt = 1
                last = p[j]
            else:
                p[j - cnt : j] = p[j - cnt - 1]
                cnt = 1
                last = p[j]
    if cnt <= theta and len(p) > 1:
        p[j - cnt : j] = p[j - cnt - 1]
    return p


# ----------------------------------------------------------------------- hand examples
def test_tie_broken_by_raw_logit_sum_not_probabilities():
    # argmax = [0, 0, 1, 1] -> 2:2 tie in the single interval.
    # raw sums: class0 420.01 > class1 410 -> class 0; the softmax-probability sums would favour class 1.
    logits = np.array([[120, 100.01, 100, 100], [100, 100, 105, 105]], dtype=np.float32)
    bnd = np.zeros((1, 4), dtype=np.float32)
    out = refinement_with_boundary(logits, bnd)
    assert out.tolist() == [0, 0, 0, 0]
    probs = torch.softmax(torch.from_numpy(logits), 0).sum(1)
    assert probs[1] > probs[0]


def test_published_stale_mode_when_no_positive_tied_sum():
    # interval 0 = frames 0..2 (mode 2), interval 1 = frames 3..6 with a 2:2 tie of classes 0/1 whose
    # raw-logit sums are both negative -> published keeps the previous interval's class (2).
    lg = np.full((3, 7), -10.0, dtype=np.float32)
    lg[2, :3] = -1.0
    lg[0, 3:5] = -2.0
    lg[1, 5:7] = -3.0
    bnd = np.full((1, 7), -5.0, dtype=np.float32)
    bnd[0, 3] = 5.0  # peak at frame 3 (logits -> sigmoid applied)
    assert argmax_prediction(lg).tolist() == [2, 2, 2, 0, 0, 1, 1]
    assert refinement_with_boundary(lg, bnd).tolist() == [2] * 7
    # class 0 sum: -4 - 20 = -24; class 1 sum: -20 - 6 = -26 -> largest sum is class 0
    assert refinement_with_boundary(lg, bnd, tie_break="max_logit_sum").tolist() == [2, 2, 2, 0, 0, 0, 0]


def test_probability_detector():
    # all values in [0, 1] -> used as probabilities: 0.3 < 0.5 is zeroed, no peak -> one interval
    lg = np.zeros((2, 6), dtype=np.float32)
    lg[1, 3:] = 1.0  # argmax [0,0,0,1,1,1]
    lg[0, :3] = 2.0
    b = np.array([[0.0, 0.0, 0.0, 0.3, 0.0, 0.0]], dtype=np.float32)
    out = refinement_with_boundary(lg, b)
    assert len(set(out.tolist())) == 1
    # one value outside [0, 1] -> sigmoid everywhere: sigmoid(0.3) = 0.57 >= 0.5 is a peak
    b2 = b.copy()
    b2[0, 0] = -1.0
    assert refinement_with_boundary(lg, b2).tolist() == [0, 0, 0, 1, 1, 1]
    assert np.allclose(boundary_probabilities(b2), 1 / (1 + np.exp(-b2)))
    assert boundary_probabilities(b) is b or np.array_equal(boundary_probabilities(b), b)


def test_last_frame_never_a_peak_and_plateaus_are_not_peaks():
    p = np.array([0.0, 0.9, 0.0, 0.7, 0.7, 0.0, 0.6, 0.95])
    assert boundary_peaks(p, 0.5).tolist() == [0, 1]  # 3/4 plateau, 7 last frame
    assert boundary_peaks(np.array([0.2]), 0.5).tolist() == [0]
    lg = np.zeros((2, 5), dtype=np.float32)
    lg[0, :4] = 1.0
    lg[1, 4] = 1.0  # argmax [0,0,0,0,1]
    b = np.array([[0.0, 0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    assert refinement_with_boundary(lg, b).tolist() == [0] * 5


def test_boundary_peaks_default_threshold_is_the_published_half():
    p = np.array([0.0, 0.6, 0.0, 0.45, 0.0])
    assert boundary_peaks(p).tolist() == [0, 1]  # 0.45 < 0.5 is zeroed


def test_mask_ignores_padded_boundaries_and_shapes():
    rng = np.random.default_rng(0)
    lg = rng.normal(size=(2, 4, 12)).astype(np.float32)
    b = rng.normal(size=(2, 1, 12)).astype(np.float32)
    mask = np.ones((2, 1, 12), dtype=bool)
    mask[1, 0, 8:] = False
    out = refinement_with_boundary(lg, b, mask)
    assert out.shape == (2, 12) and out.dtype == np.int64
    assert np.array_equal(out, ref_refine(lg, b, mask))
    b2 = b.copy()
    b2[1, 0, 8:] = 50.0  # padded boundary values must not matter beyond the detector
    b2[1, 0, 0] = -50.0
    assert np.array_equal(refinement_with_boundary(lg, b2, mask)[1], ref_refine(lg, b2, mask)[1])
    # torch in -> torch out; single video (K, T)
    o1 = refinement_with_boundary(torch.from_numpy(lg[0]), torch.from_numpy(b[0]))
    assert isinstance(o1, torch.Tensor) and o1.tolist() == ref_refine(lg[:1], b[:1], mask[:1])[0].tolist()


def test_bad_inputs():
    lg = np.zeros((3, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="boundary"):
        refinement_with_boundary(lg, np.zeros((1, 9)))
    with pytest.raises(ValueError, match="mask"):
        refinement_with_boundary(lg, np.zeros((1, 10)), mask=np.ones((1, 8), bool))
    with pytest.raises(ValueError, match="logits"):
        refinement_with_boundary(np.zeros(10), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="tie_break"):
        refinement_with_boundary(lg, np.zeros((1, 10)), tie_break="x")


# ----------------------------------------------------------------------- random vs reference
@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 40), st.integers(1, 4), st.booleans())
def test_refinement_random_against_loop(seed, n, t, k, as_prob):
    rng = np.random.default_rng(seed)
    # integer logits make argmax ties within intervals frequent; offsets make sums positive or negative
    lg = (rng.integers(-3, 4, size=(n, k, t)) + rng.choice([-2.0, 0.0, 5.0])).astype(np.float32)
    levels = np.array([0.0, 0.3, 0.6, 0.8, 1.0]) if as_prob else np.array([-4.0, 0.0, 1.0, 3.0])
    b = levels[rng.integers(0, len(levels), size=(n, 1, t))].astype(np.float32)
    mask = np.ones((n, 1, t), dtype=bool)
    for i in range(n):
        mask[i, 0, rng.integers(1, t + 1):] = False
    got = refinement_with_boundary(lg, b, mask)
    assert np.array_equal(got, ref_refine(lg, b, mask))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(0, 6))
def test_relabeling_random_against_frame_loop(labels, theta):
    p = np.repeat(np.array(labels), np.random.default_rng(len(labels)).integers(1, 5, len(labels)))
    assert relabeling(p, theta).tolist() == ref_relabel(p, theta).tolist()
    batch = np.stack([p, p[::-1]])
    assert np.array_equal(relabeling(batch, theta), np.stack([ref_relabel(p, theta), ref_relabel(p[::-1], theta)]))


def test_relabeling_hand():
    # runs A(20) B(3) A(20): B is short -> takes the label before it
    p = np.array([0] * 20 + [1] * 3 + [0] * 20)
    assert relabeling(p, 15).tolist() == [0] * 43
    # a short first run takes the LAST frame's label (published index -1 quirk)
    p = np.array([1] * 3 + [0] * 20 + [2] * 20)
    assert relabeling(p, 15).tolist() == [2] * 3 + [0] * 20 + [2] * 20


def test_gaussian_smoothing_matches_direct_convolution():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 40)).astype(np.float32)
    prob = np.exp(x - x.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    k, sigma, pad = 15, 1.0, 7
    g = np.exp(-(((np.arange(k) - 7) / sigma) ** 2) / 2) / (sigma * np.sqrt(2 * np.pi))
    padded = np.pad(prob, ((0, 0), (0, 0), (pad, pad)), mode="reflect")
    sm = np.stack([sum(g[j] * padded[..., j + t] for j in range(k)) for t in range(40)], axis=-1)
    assert np.array_equal(gaussian_smoothing(x), sm.argmax(1))
    assert gaussian_smoothing(x[0]).shape == (40,)
