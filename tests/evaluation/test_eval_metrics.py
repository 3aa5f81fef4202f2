"""Metrics: hand-computed examples, an independent loop implementation, accumulator merge/DDP, CSV."""
import csv
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trgnet_fast.data.labels import IGNORE_INDEX
from trgnet_fast.evaluation import (
    SegmentationMetrics,
    average_splits,
    boundary_counts,
    edit_score,
    f1_from_counts,
    f1_scores,
    frame_accuracy,
    get_segments,
    levenshtein,
    resolve_background,
    segment_counts,
    write_split_average,
)


def exact(expected):
    """pytest.approx for the float64 metrics: equal up to float64 rounding (1e-12 relative)."""
    return pytest.approx(expected, rel=1e-12, abs=1e-12)

THS = (0.1, 0.25, 0.5, 0.75, 0.9)


def lab(s):
    """'AABBC' -> [0, 0, 1, 1, 2]."""
    return np.array([ord(c) - ord("A") for c in s])


def f1(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return 0.0 if p + r == 0 else 100 * 2 * p * r / (p + r)


# ----------------------------------------------------------------------- independent reference (loops)
def ref_segments(y, bg=(), final_end=None):
    labels, starts, ends = [], [], []
    last = y[0]
    if last not in bg:
        labels.append(last)
        starts.append(0)
    for i in range(len(y)):
        if y[i] != last:
            if y[i] not in bg:
                labels.append(y[i])
                starts.append(i)
            if last not in bg:
                ends.append(i)
            last = y[i]
    if last not in bg:
        ends.append(len(y) - 1 if final_end is None else final_end)
    return labels, starts, ends


def ref_lev(a, b):
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def ref_counts(p, g, th, bg=()):
    pl, ps, pe = ref_segments(list(p), bg)
    gl, gs, ge = ref_segments(list(g), bg)
    tp = fp = 0
    hits = [False] * len(gl)
    for j in range(len(pl)):
        best, best_iou = None, None
        for x in range(len(gl)):
            inter = min(pe[j], ge[x]) - max(ps[j], gs[x])
            union = max(pe[j], ge[x]) - min(ps[j], gs[x])
            iou = inter / union if union != 0 else (math.nan if inter == 0 else math.copysign(math.inf, inter))
            iou = iou if pl[j] == gl[x] else (0.0 if not math.isnan(iou) else math.nan)
            # np.argmax semantics: the first nan wins, else the first maximum
            if best is None:
                best, best_iou = x, iou
            elif math.isnan(best_iou):
                pass
            elif math.isnan(iou) or iou > best_iou:
                best, best_iou = x, iou
        if best is not None and not math.isnan(best_iou) and best_iou >= th and not hits[best]:
            tp += 1
            hits[best] = True
        else:
            fp += 1
    return tp, fp, len(gl) - sum(hits)


# ----------------------------------------------------------------------- hand-computed examples
def test_hand_example_aaabbbcc():
    gt, pred = lab("AAABBBCC"), lab("AABBBBCC")
    # segments (MS-TCN ends): gt A[0,3) B[3,6) C[6,7]; pred A[0,2) B[2,6) C[6,7]
    assert [x.tolist() for x in get_segments(gt)] == [[0, 1, 2], [0, 3, 6], [3, 6, 7]]
    # IoU A = 2/3, B = 3/4, C = 1/1
    assert frame_accuracy(pred, gt) == exact(87.5)
    assert edit_score(pred, gt) == exact(100.0)
    c = segment_counts(pred, gt, THS)
    assert c.tolist() == [[3, 0, 0], [3, 0, 0], [3, 0, 0], [2, 1, 1], [1, 2, 2]]
    s = f1_scores(pred, gt, THS)
    assert s["F1@10"] == pytest.approx(100.0, abs=1e-4)
    assert s["F1@50"] == pytest.approx(100.0, abs=1e-4)
    assert s["F1@75"] == pytest.approx(200 / 3, abs=1e-4)
    assert s["F1@90"] == pytest.approx(100 / 3, abs=1e-4)


def test_hand_example_oversegmentation():
    gt, pred = lab("AAAAAABBBB"), lab("AACAAABBBB")
    # pred segs A[0,2) C[2,3) A[3,6) B[6,9]; gt A[0,6) B[6,9]
    # Edit: lev(ACAB, AB) = 2 -> 100 * (1 - 2/4) = 50
    assert edit_score(pred, gt) == exact(50.0)
    assert frame_accuracy(pred, gt) == exact(90.0)
    # IoU: A0 vs A 2/6, C vs nothing same-label -> 0, A3 vs A 3/6 (gt A used by A0 at tau<=1/3), B 1
    c = segment_counts(pred, gt, (0.1, 0.25, 0.5))
    # tau 0.1/0.25: A0 TP (1/3), C FP, A3 FP (gt A already used), B TP -> (2, 2, 0)
    # tau 0.5: A0 FP (1/3 < 0.5), C FP, A3 TP (0.5 >= 0.5, gt A unused), B TP -> (2, 2, 0)
    assert c.tolist() == [[2, 2, 0], [2, 2, 0], [2, 2, 0]]
    assert segment_counts(pred, gt, (0.6,)).tolist() == [[1, 3, 1]]


def test_final_single_frame_segment_is_nan_iou_false_positive():
    # MS-TCN convention: the final segment of one frame has start == end -> IoU 0/0 (published quirk)
    gt, pred = lab("AAAB"), lab("AAAB")
    assert segment_counts(pred, gt, (0.1,)).tolist() == [[1, 1, 1]]
    assert f1_scores(pred, gt, (0.1,))["F1@10"] == pytest.approx(50.0, abs=1e-4)


def test_background_exclusion_and_resolution():
    names = ["walk", "background", "run"]
    assert resolve_background(None, names) == frozenset()
    assert resolve_background("published", names) == frozenset({1})
    assert resolve_background("published", ["a", "b"]) == frozenset()
    assert resolve_background(["run", 0], names) == frozenset({0, 2})
    with pytest.raises(ValueError, match="background"):
        resolve_background("jump", names)
    g = np.array([1, 1, 0, 0, 1, 2, 2])
    lbl, st_, en = get_segments(g, background={1})
    assert lbl.tolist() == [0, 2] and st_.tolist() == [2, 5] and en.tolist() == [4, 6]
    assert edit_score(g, g, background={0, 1, 2}) == 100.0  # no segments at all


def test_no_gt_segments_all_predictions_false_positive():
    # published code crashes here (argmax of an empty array); we count every predicted segment as FP
    gt, pred = np.array([1, 1, 1, 1]), np.array([0, 0, 2, 2])
    assert segment_counts(pred, gt, (0.5,), background={1}).tolist() == [[0, 2, 0]]
    assert edit_score(pred, gt, background={1}) == 0.0


def test_ignore_index_frames_dropped():
    gt = np.array([0, 0, 1, 255, 255])
    pred = np.array([0, 1, 1, 2, 2])
    assert frame_accuracy(pred, gt) == exact(100 * 2 / 3)


def test_ignored_frames_excluded_from_every_metric():
    """GT 255 runs at the start, in the middle and at the end: those frames leave every metric; the rest is
    joined (pred 0 0 1 1 1 2 0 vs gt 0 0 0 1 1 2 2)."""
    I = IGNORE_INDEX
    gt = np.array([I, 0, 0, I, I, 0, 1, 1, I, 2, 2, I])
    pred = np.array([1, 0, 0, 2, 2, 1, 1, 1, 0, 2, 0, 0])
    # gt segs A[0,3) B[3,5) C[5,6]; pred A[0,2) B[2,5) C[5,6) A[6,6]
    # IoU: A 2/3, B 2/3, C 1, final A: [-0.5, -0.0, 0.0] -> argmax = 1 (B, IoU -0.0) -> FP at every tau
    assert frame_accuracy(pred, gt) == 100 * 5 / 7
    assert edit_score(pred, gt) == 75.0  # lev(ABCA, ABC) = 1 over 4
    assert segment_counts(pred, gt, THS).tolist() == [[3, 1, 0]] * 3 + [[1, 3, 2]] * 2
    m = SegmentationMetrics(num_classes=3)
    row = m.update(pred, gt, "v")
    s = m.summary()
    assert s["n_frames"] == row["n_frames"] == 7 and s["Acc"] == 100 * 5 / 7 and s["Edit"] == 75.0
    assert s["F1@10"] == s["F1@50"] == pytest.approx(100 * 2 * 0.75 / (1.75 + 1e-7), abs=1e-12)
    assert s["F1@75"] == s["F1@90"] == pytest.approx(100 * 2 * (1 / 12) / (7 / 12 + 1e-7), abs=1e-12)
    # rows = GT: the 5 ignored frames are nowhere in the confusion matrix
    assert m.confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_class_count_must_stay_below_the_ignore_index():
    assert SegmentationMetrics(num_classes=255).num_classes == 255
    with pytest.raises(ValueError, match=r"num_classes: 256 classes include the ignore_index 255"):
        SegmentationMetrics(num_classes=256)
    assert SegmentationMetrics(num_classes=300, ignore_index=None).num_classes == 300
    with pytest.raises(ValueError, match=r"num_classes: 3 classes include the ignore_index 0"):
        SegmentationMetrics(num_classes=3, ignore_index=0)


def test_whole_number_float_labels_are_accepted_and_fractions_rejected():
    assert frame_accuracy(np.array([0.0, 1.0, 2.0]), np.array([0, 1, 1])) == exact(100 * 2 / 3)
    with pytest.raises(ValueError, match="pred must hold integer class labels, got dtype float64"):
        frame_accuracy(np.array([0.0, 0.5]), np.array([0, 1]))


def _p(tp, fp, fn):  # published F1 in percent, with its epsilon
    p, r = tp / (tp + fp), tp / (tp + fn)
    return 100 * 2 * p * r / (p + r + 1e-7)


@pytest.mark.parametrize("f1_end, final_end", [("published", 4), ("mstcn", 5)])
def test_f1_end_one_frame_final_segments_both_conventions(f1_end, final_end):
    gt, pred = lab("AAAAB"), lab("AAAAB")
    assert [x.tolist() for x in get_segments(gt, f1_end=f1_end)] == [[0, 1], [0, 4], [4, final_end]]
    # published: final B [4,4] vs [4,4] -> 0/0 = nan -> FP, GT B unmatched; mstcn: [4,5) vs [4,5) -> IoU 1
    counts = {"published": (1, 1, 1), "mstcn": (2, 0, 0)}[f1_end]
    assert segment_counts(pred, gt, (0.1, 0.5), f1_end=f1_end).tolist() == [list(counts)] * 2
    assert f1_scores(pred, gt, (0.5,), f1_end=f1_end)["F1@50"] == pytest.approx(_p(*counts), rel=1e-12)
    assert edit_score(pred, gt) == 100.0 and frame_accuracy(pred, gt) == 100.0


def test_f1_end_one_frame_final_prediction_vs_longer_gt():
    gt, pred = lab("AAABBB"), lab("AAAAAB")
    # published: gt A[0,3) B[3,5]; pred A[0,5) B[5,5]: IoU A 3/5, B (5-5)/(5-3) = 0 -> FP at every tau
    # mstcn:     gt A[0,3) B[3,6); pred A[0,5) B[5,6): IoU A 3/5, B 1/3
    expect = {"published": {0.1: (1, 1, 1), 0.25: (1, 1, 1), 0.5: (1, 1, 1)},
              "mstcn": {0.1: (2, 0, 0), 0.25: (2, 0, 0), 0.5: (1, 1, 1)}}
    for f1_end, by_tau in expect.items():
        m = SegmentationMetrics(num_classes=2, iou_thresholds=(0.1, 0.25, 0.5), f1_end=f1_end)
        m.update(pred, gt)
        assert m.seg_counts.tolist() == [list(by_tau[t]) for t in (0.1, 0.25, 0.5)]
        assert m.summary()["F1@25"] == pytest.approx(_p(*by_tau[0.25]), rel=1e-12)
        assert m.summary()["F1@50"] == pytest.approx(_p(*by_tau[0.5]), rel=1e-12)
    assert _p(2, 0, 0) == pytest.approx(100 * 2 / (2 + 1e-7), rel=1e-12)
    assert _p(1, 1, 1) == pytest.approx(100 * 0.5 / (1 + 1e-7), rel=1e-12)


def test_f1_end_is_validated_and_part_of_the_config():
    for bad in ("MSTCN", None, "T"):
        with pytest.raises(ValueError, match=r"f1_end: expected one of \('published', 'mstcn'\), got"):
            SegmentationMetrics(f1_end=bad)
        with pytest.raises(ValueError, match="f1_end"):
            f1_scores([0, 1], [0, 1], f1_end=bad)
    with pytest.raises(ValueError, match="cannot merge metrics with different f1_end"):
        SegmentationMetrics(num_classes=2).merge(SegmentationMetrics(num_classes=2, f1_end="mstcn"))


def test_f1_from_counts_published_epsilon():
    assert f1_from_counts(0, 0, 0) == 0.0
    assert f1_from_counts(1, 0, 0) == pytest.approx(100 * 2 / (2 + 1e-7), rel=1e-12)
    assert f1_from_counts(1, 0, 0, eps=0.0) == 100.0


@pytest.mark.parametrize("bad", ["pred", "gt"])
def test_length_mismatch_raises_naming_argument(bad):
    with pytest.raises(ValueError, match="pred.*gt|gt.*pred"):
        frame_accuracy(np.zeros(4, int), np.zeros(5, int))
    m = SegmentationMetrics(num_classes=3)
    with pytest.raises(ValueError, match="pred"):
        m.update(np.zeros(4, int), np.zeros(5, int), "v")
    with pytest.raises(ValueError, match=bad):
        m.update(np.zeros((2, 2), int) if bad == "pred" else np.zeros(4, int),
                 np.zeros((2, 2), int) if bad == "gt" else np.zeros(4, int))
    with pytest.raises(ValueError, match=bad):
        m.update(np.full(4, 7) if bad == "pred" else np.zeros(4, int),
                 np.full(4, 7) if bad == "gt" else np.zeros(4, int))


def test_boundary_counts_hand():
    # pred peaks: 0 (always), 10; gt peaks: 0, 13 (isolated marks) -> both matched within 5
    bp = np.zeros(20)
    bp[10] = 0.9
    bg = np.zeros(20)
    bg[13] = 1.0
    assert boundary_counts(bp, bg, 0.5, 5) == (2, 0, 0, 20)
    assert boundary_counts(bp, bg, 0.5, 2) == (1, 1, 1, 20)
    # DeST GT marks both frames of a transition: a plateau, not a strict peak -> only frame 0
    bg2 = np.zeros(20)
    bg2[[0, 13, 14]] = 1.0
    assert boundary_counts(bp, bg2, 0.5, 5) == (1, 1, 0, 20)
    with pytest.raises(ValueError, match="boundary_pred"):
        boundary_counts(np.zeros(5), np.zeros(6))


# ----------------------------------------------------------------------- random vs independent reference
seqs = st.integers(1, 60).flatmap(
    lambda t: st.tuples(
        st.lists(st.integers(0, 3), min_size=t, max_size=t),
        st.lists(st.integers(0, 3), min_size=t, max_size=t),
    )
)


@settings(max_examples=150, deadline=None)
@given(seqs, st.sampled_from([(), (0,), (1, 2)]))
def test_random_against_reference(pg, bg):
    p, g = np.array(pg[0]), np.array(pg[1])
    for y in (p, g):
        ref = ref_segments(list(y), bg)
        got = get_segments(y, bg)
        assert [x.tolist() for x in got] == [list(map(int, r)) for r in ref]
        got = get_segments(y, bg, f1_end="mstcn")
        assert [x.tolist() for x in got] == [list(map(int, r)) for r in ref_segments(list(y), bg, len(y))]
    pl, gl = ref_segments(list(p), bg)[0], ref_segments(list(g), bg)[0]
    assert levenshtein(pl, gl) == ref_lev(pl, gl)
    if max(len(pl), len(gl)):
        assert edit_score(p, g, bg) == exact(100 * (1 - ref_lev(pl, gl) / max(len(pl), len(gl))))
    if len(gl):  # the published code crashes without GT segments
        got = segment_counts(p, g, THS, bg)
        for k, th in enumerate(THS):
            assert tuple(got[k]) == ref_counts(p, g, th, bg)
    assert frame_accuracy(p, g) == exact(100 * np.mean(p == g))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=25), st.lists(st.integers(0, 9), max_size=25))
def test_levenshtein_random(a, b):
    assert levenshtein(a, b) == ref_lev(a, b)


# ----------------------------------------------------------------------- accumulator
def _random_videos(n=7, seed=0):
    rng = np.random.default_rng(seed)
    vids = []
    for i in range(n):
        t = int(rng.integers(20, 80))
        g = np.repeat(rng.integers(0, 5, 8), rng.integers(1, 12, 8))[:t]
        t = len(g)
        p = g.copy()
        flip = rng.random(t) < 0.15
        p[flip] = rng.integers(0, 5, flip.sum())
        bp = rng.random(t)
        bgt = np.zeros(t)
        bgt[np.nonzero(np.diff(g))[0] + 1] = 1.0
        vids.append((p, g, f"v{i}", bp, bgt))
    return vids


def test_accumulator_summary_matches_pooled_counts():
    vids = _random_videos()
    m = SegmentationMetrics(num_classes=5)
    for p, g, n, bp, bgt in vids:
        m.update(p, g, n, boundary_pred=bp, boundary_gt=bgt)
    s = m.summary()
    tot = np.sum([[ref_counts(p, g, th) for th in THS] for p, g, *_ in vids], axis=0)
    for k, th in enumerate(THS):
        assert s[f"F1@{int(th * 100)}"] == pytest.approx(f1(*tot[k]), abs=1e-4)
    assert s["Acc"] == exact(100 * sum((p == g).sum() for p, g, *_ in vids) / sum(len(g) for _, g, *_ in vids))
    assert s["Edit"] == exact(np.mean([edit_score(p, g) for p, g, *_ in vids]))
    assert s["n_videos"] == len(vids)
    assert m.confusion.sum() == s["n_frames"]
    assert np.trace(m.confusion) == sum((p == g).sum() for p, g, *_ in vids)
    # rows = GT
    assert m.confusion.sum(axis=1).tolist() == np.bincount(np.concatenate([g for _, g, *_ in vids]), minlength=5).tolist()
    assert {"BoundaryF1", "BoundaryPrecision", "BoundaryRecall", "BoundaryAcc"} <= set(s)
    pc = m.per_class()
    assert pc["recall"].shape == (5,)


def test_accumulator_merge_and_tensor_equal_single_pass():
    vids = _random_videos(9, seed=3)
    full = SegmentationMetrics(num_classes=5)
    a, b = SegmentationMetrics(num_classes=5), SegmentationMetrics(num_classes=5)
    for i, (p, g, n, bp, bgt) in enumerate(vids):
        full.update(p, g, n, bp, bgt)
        (a if i % 2 else b).update(p, g, n, bp, bgt)
    merged = SegmentationMetrics(num_classes=5).merge(a).merge(b.state_dict())
    assert merged.summary() == exact(full.summary())
    assert len(merged.per_video()) == len(vids)
    # DDP path: sum of flat tensors
    t = a.to_tensor() + b.to_tensor()
    assert t.dtype == torch.float64 and t.ndim == 1
    red = SegmentationMetrics(num_classes=5).from_tensor(t)
    assert red.summary() == exact(full.summary())
    with pytest.raises(ValueError, match="entries"):
        SegmentationMetrics(num_classes=4).from_tensor(t)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(num_classes=4).merge(a)


def test_csv_written_and_parseable_and_split_average(tmp_path):
    paths = []
    for split in range(3):
        m = SegmentationMetrics(class_names=list("abcde"))
        for p, g, n, bp, bgt in _random_videos(4, seed=split):
            m.update(p, g, n, bp, bgt)
        path = m.write_csv(tmp_path / f"split{split}" / "scores.csv")
        paths.append(path)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["name"] for r in rows] == ["v0", "v1", "v2", "v3", "all"]
        assert set(["F1@10", "F1@25", "F1@50", "F1@75", "F1@90", "Edit", "Acc", "BoundaryF1"]) <= set(rows[0])
        assert float(rows[-1]["Acc"]) == pytest.approx(m.summary()["Acc"], abs=1e-5)
        assert int(rows[-1]["n_frames"]) == m.summary()["n_frames"]
        assert float(rows[1]["Edit"]) == pytest.approx(m.per_video()[1]["Edit"], abs=1e-5)
    avg = average_splits(paths)
    alls = []
    for pth in paths:
        with open(pth, newline="") as f:
            alls.append([r for r in csv.DictReader(f) if r["name"] == "all"][0])
    assert avg["n_splits"] == 3
    assert avg["F1@50"] == exact(np.mean([float(r["F1@50"]) for r in alls]))
    out = write_split_average(paths, tmp_path / "avg.csv")
    with open(tmp_path / "avg.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["name"] == "mean" and len(rows) == 4
    assert float(rows[-1]["Acc"]) == pytest.approx(out["Acc"], abs=1e-5)
    with pytest.raises(ValueError, match="csv_paths"):
        average_splits([])


# ----------------------------------------------------------------------- hand example of the accumulator's scores
def _hand_video_metrics(videos=1):
    """Each video: 20 frames, pred A×10 B×10 vs gt A×13 B×5 C×2 (15 frames right), one predicted boundary peak at
    frame 10 and one GT mark at 13: with tolerance 2, boundary counts (tp, fp, fn) = (1, 1, 1) besides frame 0."""
    m = SegmentationMetrics(num_classes=3, boundary_tolerance=2)
    bp, bg = np.zeros(20), np.zeros(20)
    bp[10], bg[13] = 0.9, 1.0
    rows = [m.update(lab("A" * 10 + "B" * 10), lab("A" * 13 + "B" * 5 + "C" * 2), boundary_pred=bp, boundary_gt=bg)
            for _ in range(videos)]
    return m, rows


def test_per_video_row_and_pooled_boundary_scores_hand():
    m, rows = _hand_video_metrics(videos=2)
    # boundary: tn = 20 - 1 - 1 - 1 = 17 per video -> (tp + tn) / n = 18 / 20
    expected = {"n_frames": 20, "Acc": 75.0, "BoundaryAcc": 90.0, "BoundaryPrecision": 50.0, "BoundaryRecall": 50.0}
    for row in rows:
        assert {k: row[k] for k in expected} == exact(expected)
    s = m.summary()
    assert {k: s[k] for k in ("Acc", "BoundaryAcc", "BoundaryPrecision", "BoundaryRecall")} == exact(
        {"Acc": 75.0, "BoundaryAcc": 90.0, "BoundaryPrecision": 50.0, "BoundaryRecall": 50.0})
    assert (s["n_videos"], s["n_frames"], m.b_frames) == (2, 40, 40)


def test_per_class_scores_hand():
    m, _ = _hand_video_metrics()
    pc = m.per_class()
    # A: precision 10/10, recall 10/13; B: 5/10, 5/5; C: never predicted -> 0
    assert pc["precision"] == exact([100.0, 50.0, 0.0])
    assert pc["recall"] == exact([100 * 10 / 13, 100.0, 0.0])
    assert pc["f1"] == exact([100 * 20 / 23, 100 * 2 / 3, 0.0])
    assert pc["support"].tolist() == [13, 5, 2]


def test_update_rejects_a_label_equal_to_num_classes():
    m = SegmentationMetrics(num_classes=3)
    with pytest.raises(ValueError, match=r"pred has labels outside \[0, 3\) \(min 0, max 3\)"):
        m.update(lab("AD"), lab("AB"))
    with pytest.raises(ValueError, match=r"gt has labels outside \[0, 3\)"):
        m.update(lab("AB"), lab("AD"))
    assert m.n_videos == 0


def test_state_dict_round_trip_restores_every_score():
    m, _ = _hand_video_metrics(videos=2)
    back = SegmentationMetrics(num_classes=3, boundary_tolerance=2).load_state_dict(m.state_dict())
    assert back.summary() == m.summary()
    assert back.per_video() == m.per_video()
    assert (back.confusion == m.confusion).all()


def test_tensor_round_trip_without_num_classes():
    m = SegmentationMetrics()
    m.update(lab("AABB"), lab("ABBB"))
    back = SegmentationMetrics().from_tensor(m.to_tensor())
    assert back.summary() == m.summary()
    assert back.confusion.shape == (0, 0)
