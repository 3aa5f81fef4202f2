"""Vectorized run-length encoding and segment means vs per-frame / per-segment loops."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from trgnet_fast.data import segment_capacity
from trgnet_fast.data.labels import IGNORE_INDEX as IGN
from trgnet_fast.losses import extract_segments, segment_means



def _as_list(segs):
    return list(zip(segs.video.tolist(), segs.start.tolist(), segs.end.tolist(), segs.label.tolist()))


@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("mid_ignore", [False, True])
@pytest.mark.parametrize("n,t", [(1, 1), (1, 7), (3, 1), (4, 13), (6, 63)])
def test_segments_match_scan(ref, gen, quirks, mid_ignore, n, t):
    labels, _ = ref.random_labels(n, t, 5, gen, mid_ignore=mid_ignore)
    segs = extract_segments(labels, published_quirks=quirks)
    expect = ref.scan_published(labels) if quirks else ref.scan_corrected(labels)
    assert _as_list(segs) == expect
    # segments hold no ignored frame in either mode: count = run length
    assert segs.count.tolist() == [float(e - s + 1) for _, s, e, _ in expect]


_label_value = st.sampled_from([0, 1, 2, IGN])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_label_value, min_size=1, max_size=12), min_size=1, max_size=4),
       st.booleans())
def test_segments_any_rows(ref, rows, quirks):
    """Arbitrary rows (255 anywhere, leading 255, all-255 rows), padded to the longest with 255."""
    scan_corrected, scan_published = ref.scan_corrected, ref.scan_published
    t = max(len(r) for r in rows)
    labels = torch.tensor([r + [IGN] * (t - len(r)) for r in rows])
    segs = extract_segments(labels, published_quirks=quirks)
    expect = scan_published(labels) if quirks else scan_corrected(labels)
    assert _as_list(segs) == expect
    assert segs.valid.all()
    # a static bound: the same segments first, then padding slots as documented
    bound = segment_capacity(labels)
    padded = extract_segments(labels, published_quirks=quirks, max_segments=bound)
    m = len(expect)
    assert padded.num_segments == bound and padded.valid.tolist() == [True] * m + [False] * (bound - m)
    assert _as_list(padded)[:m] == expect and padded.count[:m].tolist() == segs.count.tolist()
    assert _as_list(padded)[m:] == [(0, 0, 0, 0)] * (bound - m) and (padded.count[m:] == 1).all()
    frames = padded.frame_segment
    assert torch.equal(torch.where(frames == bound, m, frames), segs.frame_segment)  # "no segment" = M


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_label_value, min_size=1, max_size=12), min_size=1, max_size=4),
       st.booleans(), st.integers(1, 9))
def test_padding_to_a_length_bucket_keeps_the_segments_given_the_batch_length(ref, rows, quirks, extra):
    """Rows padded ``extra`` frames beyond the longest (as the collate pads to a length bucket): with batch_length =
    the longest, the segments of the batch padded to its longest only, in either mode; without it the published scan
    sees the full-length rows as padded and drops their last segment."""
    t = max(len(r) for r in rows)
    labels = torch.tensor([r + [IGN] * (t - len(r)) for r in rows])
    padded = torch.cat([labels, torch.full((len(rows), extra), IGN)], 1)
    segs = extract_segments(labels, published_quirks=quirks)
    bucketed = extract_segments(padded, published_quirks=quirks, batch_length=t)
    assert _as_list(bucketed) == _as_list(segs) and torch.equal(bucketed.count, segs.count)
    m = segs.num_segments
    assert torch.equal(bucketed.frame_segment, torch.cat([segs.frame_segment, torch.full((len(rows), extra), m)], 1))
    unaware = extract_segments(padded, published_quirks=quirks)
    assert _as_list(unaware) == (ref.scan_published(padded) if quirks else _as_list(segs))


def test_published_scan_drops_segments_before_ignored_frames(ref):
    """The published scan: the last real segment of every padded video is dropped, and so is the segment
    right before a 255 run inside a video; a 255 run followed by a label is dropped (the published code
    would emit it with label 255); full-length videos keep every segment."""
    labels = torch.tensor([[0, 0, 1, 1, 2, 2],        # full length: 3 segments
                           [3, 3, 4, 255, 255, 255],   # padded: 4 is dropped
                           [5, 255, 255, 255, 255, 255],  # padded one-segment video: nothing emitted
                           [1, 255, 1, 2, 2, 2],       # 255 inside: the 1 before it is dropped
                           [255, 255, 4, 4, 255, 0]])  # leading 255 run and a 255 run before the last
    pub = extract_segments(labels, published_quirks=True)
    assert _as_list(pub) == [(0, 0, 1, 0), (0, 2, 3, 1), (0, 4, 5, 2), (1, 0, 1, 3), (3, 2, 2, 1),
                             (3, 3, 5, 2), (4, 5, 5, 0)]
    assert _as_list(pub) == ref.scan_published(labels)
    assert _as_list(extract_segments(labels)) == _as_list(pub)  # the default
    cor = extract_segments(labels, published_quirks=False)
    assert _as_list(cor) == [(0, 0, 1, 0), (0, 2, 3, 1), (0, 4, 5, 2), (1, 0, 1, 3), (1, 2, 2, 4),
                             (2, 0, 0, 5), (3, 0, 0, 1), (3, 2, 2, 1), (3, 3, 5, 2), (4, 2, 3, 4),
                             (4, 5, 5, 0)]


@pytest.mark.parametrize("method", ["scatter", "index_add"])
@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("n,t,d", [(1, 1, 3), (1, 9, 4), (5, 40, 7), (8, 97, 16)])
def test_segment_means_match_slices(ref, gen, quirks, n, t, d, method):
    labels, _ = ref.random_labels(n, t, 4, gen, mid_ignore=True)
    feats = torch.randn(n, d, t, generator=gen, dtype=torch.float64)
    segs = extract_segments(labels, published_quirks=quirks)
    got = segment_means(feats, segs, method=method)
    expect = ref.slice_means(feats, ref.scan_published(labels) if quirks else ref.scan_corrected(labels))
    assert got.shape == expect.shape
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["scatter", "index_add"])
def test_segment_means_float32_and_grad(ref, gen, method):
    labels, _ = ref.random_labels(4, 50, 3, gen)
    feats = torch.randn(4, 8, 50, generator=gen, requires_grad=True)
    segs = extract_segments(labels, published_quirks=False)
    got = segment_means(feats, segs, method=method)
    expect = ref.slice_means(feats.detach().double(), ref.scan_corrected(labels))
    assert torch.linalg.vector_norm(got.double() - expect) / torch.linalg.vector_norm(expect) < 1e-6
    got.sum().backward()
    # every valid frame gets 1/count of its segment, padding gets 0
    g = feats.grad[:, 0, :]
    assert torch.all(g[labels == IGN] == 0)
    assert torch.all(g[labels != IGN] > 0)


@pytest.mark.parametrize("method", ["scatter", "index_add"])
def test_segment_means_of_bf16_features_are_float32(ref, gen, method):
    """Half-type features: the means come back in float32, the loss terms' dtype (not rounded back to bf16)."""
    labels, _ = ref.random_labels(3, 40, 3, gen)
    feats = torch.randn(3, 8, 40, generator=gen).bfloat16()
    segs = extract_segments(labels, published_quirks=False)
    got = segment_means(feats, segs, method=method)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, segment_means(feats.float(), segs, method=method), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("runs,minimum,bound", [(0, 8, 8), (1, 8, 8), (8, 8, 8), (9, 8, 16), (100, 8, 128),
                                                 (3, 1, 4), (1, 1, 1)])
def test_segment_capacity_is_the_next_power_of_two(runs, minimum, bound):
    labels = torch.full((2, 120), IGN)
    labels[0, :runs] = torch.arange(runs) % 2  # alternating labels: one run per frame
    assert segment_capacity(labels, minimum=minimum) == bound


def test_segment_capacity_counts_runs_across_ignored_frames_and_videos():
    labels = torch.tensor([[0, 0, IGN, 0, 1, 1], [2, IGN, IGN, 2, 2, IGN]])  # runs: 3 + 2
    assert segment_capacity(labels, minimum=1) == 8 and segment_capacity(labels, minimum=16) == 16
    assert extract_segments(labels, published_quirks=False).num_segments == 5
    with pytest.raises(ValueError, match="labels: expected an \\(N, T\\) integer tensor"):
        segment_capacity(labels.float())


def test_one_segment_over_the_bound_is_an_error():
    labels = torch.tensor([[0, 1, 2]])  # three segments
    assert extract_segments(labels, published_quirks=False, max_segments=3).valid.tolist() == [True] * 3
    with pytest.raises(RuntimeError, match="more segments than max_segments=2"):
        extract_segments(labels, published_quirks=False, max_segments=2)


def test_segments_bad_input():
    with pytest.raises(ValueError, match="labels"):
        extract_segments(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        extract_segments(torch.zeros(2, 3))
    for bound in (0, 2.0, True):
        with pytest.raises(ValueError, match="max_segments"):
            extract_segments(torch.zeros(2, 3, dtype=torch.long), max_segments=bound)
    for length in (0, 4, 2.0, True):
        with pytest.raises(ValueError, match=r"batch_length: expected None or an int in \[1, T = 3\]"):
            extract_segments(torch.zeros(2, 3, dtype=torch.long), batch_length=length)
    segs = extract_segments(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="features"):
        segment_means(torch.zeros(2, 4, 5), segs)
    with pytest.raises(ValueError, match="method"):
        segment_means(torch.zeros(2, 4, 3), segs, method="loop")
