"""Plots and MS-TCN prediction files."""
import struct

import numpy as np
import pytest
import torch

from trgnet_fast.data.labels import IGNORE_INDEX
from trgnet_fast.evaluation import SegmentationMetrics, class_colors, plot_barcode, plot_per_class, write_predictions


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_barcode_png_size_and_content(tmp_path):
    gt = np.repeat([0, 3, 1, 2], [30, 20, 25, 25])
    pred = np.repeat([0, 3, 2, 2], [28, 25, 20, 27])
    out = plot_barcode(tmp_path / "a" / "v.png", gt, {"refined": pred, "raw": torch.from_numpy(gt)},
                       num_classes=130, class_names=[f"c{i}" for i in range(130)],
                       boundary=np.random.default_rng(0).random(100), title="v", width_px=800,
                       row_height_px=50, dpi=100)
    w, h = png_size(out)
    assert (w, h) == (800, 50 * (3 + 1 + 1))
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    assert img.std() > 0.05  # not blank
    out2 = plot_barcode(tmp_path / "b.png", gt, pred)
    assert png_size(out2) == (1200, 60 * 3)


def test_barcode_errors(tmp_path):
    with pytest.raises(ValueError, match="preds"):
        plot_barcode(tmp_path / "x.png", np.zeros(10, int), np.zeros(9, int))
    with pytest.raises(ValueError, match="boundary"):
        plot_barcode(tmp_path / "x.png", np.zeros(10, int), np.zeros(10, int), boundary=np.zeros(3))
    with pytest.raises(ValueError, match="labels must lie"):
        plot_barcode(tmp_path / "x.png", np.zeros(10, int), np.full(10, 5), num_classes=3)


def test_class_colors_consistent_and_distinct():
    c = class_colors(130)
    assert c.shape == (130, 4)
    assert len({tuple(np.round(r, 4)) for r in c}) == 130
    assert np.array_equal(class_colors(8), class_colors(8))


@pytest.mark.parametrize("k", [11, 20, 60])
def test_class_colors_of_the_tab20_palettes_are_distinct(k):
    """11..60 classes take tab20, tab20b, tab20c, dark shades first: no colour twice."""
    c = class_colors(k)
    assert c.shape == (k, 4)
    assert len({tuple(r) for r in c}) == k


def test_per_class_chart(tmp_path):
    m = SegmentationMetrics(class_names=["a", "b", "c"])
    m.update(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 2]), "v")
    out = plot_per_class(tmp_path / "pc.png", m.per_class(), class_names=m.class_names, width_px=600, height_px=300)
    assert png_size(out) == (600, 300)


def _record_calls(monkeypatch, cls, name):
    """Replace ``cls.name`` by a wrapper recording each call's first argument after self; returns the record."""
    original, record = getattr(cls, name), []

    def wrapper(self, first, *args, **kwargs):
        record.append(first)
        return original(self, first, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return record


def test_per_class_chart_centres_each_group_of_bars_on_its_named_tick(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    bars = _record_calls(monkeypatch, Axes, "bar")
    tick_labels = _record_calls(monkeypatch, Axes, "set_xticklabels")
    scores = {"f1": [1.0, 2.0, 3.0], "recall": [3.0, 2.0, 1.0], "support": [4, 4, 4]}
    plot_per_class(tmp_path / "pc.png", scores, class_names=["a", "b", "c"], width_px=300, height_px=200)
    assert [list(t) for t in tick_labels] == [["a", "b", "c"]]
    # two scores: bars 0.4 wide on either side of each class's tick
    np.testing.assert_allclose(np.asarray(bars, dtype=float), [[-0.2, 0.8, 1.8], [0.2, 1.2, 2.2]])


@pytest.mark.parametrize("with_boundary", [False, True])
def test_barcode_rows_stack_inside_the_figure_with_one_time_axis(tmp_path, monkeypatch, with_boundary):
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    rects = _record_calls(monkeypatch, Figure, "add_axes")
    hidden_ticks = _record_calls(monkeypatch, Axes, "set_xticks")
    gt = np.repeat([0, 1], [5, 5])
    plot_barcode(tmp_path / "v.png", gt, {"a": gt, "b": gt}, boundary=np.linspace(0, 1, 10) if with_boundary else None)
    # ground truth, a, b (+ the boundary curve) top to bottom, each inside the figure
    bottoms = [r[1] for r in rects]
    assert len(rects) == 3 + with_boundary and bottoms == sorted(bottoms, reverse=True)
    assert all(0 < r[1] and r[1] + r[3] <= 1 for r in rects)
    # only the lowest row shows the time axis: the barcode rows above it hide theirs
    assert len(hidden_ticks) == (3 if with_boundary else 2)


def test_write_predictions_mstcn_format(tmp_path):
    p = write_predictions(tmp_path / "pred" / "v1.txt", np.array([1, 1, 0, 2]), ["walk", "run", "jump"])
    assert open(p).read().splitlines() == ["run", "run", "walk", "jump"]
    with pytest.raises(ValueError, match="labels"):
        write_predictions(tmp_path / "bad.txt", np.array([3]), ["walk", "run", "jump"])


def test_barcode_draws_ignored_gt_frames_white(tmp_path):
    """GT frames labelled 255 are white in the GT row; the prediction row shows every frame's class."""
    import matplotlib.image as mpimg

    I = IGNORE_INDEX
    gt = np.array([0, 0, 0, I, I, I, I, 1, 1, I])
    pred = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    out = plot_barcode(tmp_path / "v.png", gt, pred, num_classes=2, width_px=1000, row_height_px=60, dpi=100)
    img = mpimg.imread(out)[..., :3]  # rows: GT centred at 1/3 of the height, prediction at 2/3
    h, w = img.shape[:2]

    def px(row_frac, t):  # centre of frame t in the barcode axes (x from 0.14 to 0.80 of the width)
        return img[int(row_frac * h), int((0.14 + (t + 0.5) / 10 * 0.66) * w)]

    colors = class_colors(2)[:, :3]
    for t in range(10):
        expect_gt = np.ones(3) if gt[t] == I else colors[gt[t]]
        np.testing.assert_allclose(px(1 / 3, t), expect_gt, atol=0.01)
        np.testing.assert_allclose(px(2 / 3, t), colors[pred[t]], atol=0.01)
