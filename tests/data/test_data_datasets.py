"""CsvSegmentationDataset and MSTCNDataset on tiny fixtures written in the exact on-disk formats."""
import re

import numpy as np
import pytest
import torch

from trgnet_fast.data.collate import collate
from trgnet_fast.data.datasets import CsvSegmentationDataset, MSTCNDataset, carve_validation
from trgnet_fast.data.features import build_features
from trgnet_fast.data.labels import boundary_from_labels


def write_csv_layout(root, name, raw, labels, boundary=None, leading_slash=True):
    d = root / "PKU-subject"
    for sub in ("features", "gt_arr", "gt_boundary_arr"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    np.save(d / "features" / f"{name}.npy", raw)
    np.save(d / "gt_arr" / f"{name}.npy", labels)
    np.save(d / "gt_boundary_arr" / f"{name}.npy", boundary_from_labels(labels) if boundary is None else boundary)
    s = "/" if leading_slash else ""
    return ",".join(f"{s}PKU-subject/{sub}/{name}.npy" for sub in ("features", "gt_arr", "gt_boundary_arr")) + "\n"


def make_csv(tmp_path, rows, name="train1.csv"):
    p = tmp_path / name
    p.write_text("feature,label,boundary\n" + "".join(rows))
    return p


def test_csv_dataset_raw_and_built(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((7, 150)).astype(np.float32)
    labels = np.array([0, 0, 3, 3, 3, 1, 1], np.int64)
    built = build_features(rng.standard_normal((5, 150)).astype(np.float32), "PKU-subject")
    rows = [write_csv_layout(tmp_path, "A01N02-L", raw, labels),
            write_csv_layout(tmp_path, "A02N02-L", built, np.zeros(5, np.int64), leading_slash=False)]
    ds = CsvSegmentationDataset(make_csv(tmp_path, rows), str(tmp_path), "PKU-subject", num_classes=52)
    assert len(ds) == 2 and ds.names == ["A01N02-L", "A02N02-L"]
    item = ds[0]
    assert item["feature"].dtype == torch.float32 and item["feature"].shape == (12, 25, 7)
    np.testing.assert_array_equal(item["feature"].numpy(), build_features(raw, "PKU-subject"))
    assert item["label"].dtype == torch.int64 and item["label"].tolist() == labels.tolist()
    assert item["boundary"].dtype == torch.float32 and item["boundary"].tolist() == [1, 0, 1, 1, 0, 1, 1]
    assert item["name"] == "A01N02-L"
    np.testing.assert_array_equal(ds[1]["feature"].numpy(), built)


def test_csv_dataset_lara_downsamples(tmp_path):
    d = tmp_path / "LARA"
    for sub in ("features", "gt_arr", "gt_boundary_arr"):
        (d / sub).mkdir(parents=True)
    raw = np.random.default_rng(1).standard_normal((6, 10, 19, 1)).astype(np.float32)
    labels = np.array([0] * 5 + [2] * 5)
    np.save(d / "features/L01.npy", raw)
    np.save(d / "gt_arr/L01.npy", labels)
    np.save(d / "gt_boundary_arr/L01.npy", boundary_from_labels(labels))
    csv = make_csv(tmp_path, ["/LARA/features/L01.npy,/LARA/gt_arr/L01.npy,/LARA/gt_boundary_arr/L01.npy\n"])
    item = CsvSegmentationDataset(csv, tmp_path, "LARA", cache=True)[0]
    assert item["feature"].shape == (12, 19, 3)
    np.testing.assert_array_equal(item["feature"].numpy(), build_features(raw, "LARA")[..., ::4])
    assert item["label"].tolist() == [0, 0, 2] and item["boundary"].tolist() == [1, 1, 0]


def test_csv_dataset_errors(tmp_path):
    rng = np.random.default_rng(2)
    ok = write_csv_layout(tmp_path, "ok", rng.standard_normal((6, 150)).astype(np.float32), np.zeros(6, np.int64))
    short = write_csv_layout(tmp_path, "short", rng.standard_normal((6, 150)).astype(np.float32), np.zeros(5, np.int64),
                             boundary=np.zeros(6, np.float32))
    badb = write_csv_layout(tmp_path, "badb", rng.standard_normal((6, 150)).astype(np.float32), np.zeros(6, np.int64),
                            boundary=np.zeros(7, np.float32))
    badshape = write_csv_layout(tmp_path, "badshape", np.zeros((6, 149), np.float32), np.zeros(6, np.int64))
    badlab = write_csv_layout(tmp_path, "badlab", rng.standard_normal((6, 150)).astype(np.float32), np.full(6, 60))
    (tmp_path / "PKU-subject/features/corrupt.npy").write_bytes(b"not an npy file")
    corrupt = ok.replace("features/ok.npy", "features/corrupt.npy")
    missing = ok.replace("gt_arr/ok.npy", "gt_arr/missing.npy")
    ds = CsvSegmentationDataset(make_csv(tmp_path, [ok, short, badb, badshape, badlab, corrupt, missing]),
                                tmp_path, "PKU-subject", num_classes=52)
    assert ds[0]["feature"].shape == (12, 25, 6)
    with pytest.raises(ValueError, match=r"length mismatch: .*short\.npy has 6 frames .*gt_arr/short\.npy has 5"):
        ds[1]
    with pytest.raises(ValueError, match=r"gt_boundary_arr/badb\.npy has 7"):
        ds[2]
    with pytest.raises(ValueError, match=r"badshape\.npy: expected PKU-subject features"):
        ds[3]
    with pytest.raises(ValueError, match=r"gt_arr/badlab\.npy: expected class ids in 0\.\.51"):
        ds[4]
    with pytest.raises(ValueError, match=r"corrupt\.npy: not a readable \.npy"):
        ds[5]
    with pytest.raises(FileNotFoundError, match=r"gt_arr/missing\.npy"):
        ds[6]
    with pytest.raises(IndexError):
        ds[7]


def test_csv_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nofile.csv"):
        CsvSegmentationDataset(tmp_path / "nofile.csv", tmp_path, "PKU-subject")
    bad = tmp_path / "bad.csv"
    bad.write_text("feat,lab\n")
    with pytest.raises(ValueError, match=r"bad\.csv: expected header"):
        CsvSegmentationDataset(bad, tmp_path, "PKU-subject")
    bad.write_text("feature,label,boundary\n")
    with pytest.raises(ValueError, match=r"bad\.csv: split csv lists no videos"):
        CsvSegmentationDataset(bad, tmp_path, "PKU-subject")
    bad.write_text("feature,label,boundary\na,b\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: expected 3 columns"):
        CsvSegmentationDataset(bad, tmp_path, "PKU-subject")


def make_mstcn(tmp_path, layout="CTVM"):
    root = tmp_path / "mstcn"
    for sub in ("features", "groundTruth", "splits"):
        (root / sub).mkdir(parents=True)
    (root / "mapping.txt").write_text("0 idle\n1 wave\n2 jump\n")
    rng = np.random.default_rng(3)
    videos = {"v1": ["idle"] * 3 + ["wave"] * 4, "v2": ["jump"] * 5}
    arrays = {}
    for v, names in videos.items():
        T = len(names)
        arr = rng.standard_normal((3, T, 17, 1)).astype(np.float32)
        if layout == "CVT":
            arr = rng.standard_normal((6, 17, T)).astype(np.float32)
        arrays[v] = arr
        np.save(root / "features" / f"{v}.npy", arr)
        (root / "groundTruth" / f"{v}.txt").write_text("\n".join(names) + "\n")
    (root / "splits" / "train.split1.bundle").write_text("v1.txt\nv2.txt\n")
    return root, arrays


@pytest.mark.parametrize("layout", ["CTVM", "CVT"])
def test_mstcn_dataset(tmp_path, layout):
    root, arrays = make_mstcn(tmp_path, layout)
    ds = MSTCNDataset(root, "train.split1.bundle", "TCG-15", feature_layout=layout)
    assert len(ds) == 2 and ds.names == ["v1", "v2"]
    item = ds[0]
    assert item["feature"].shape == (6, 17, 7) and item["name"] == "v1"
    expect = arrays["v1"] if layout == "CVT" else build_features(arrays["v1"][..., 0].transpose(1, 2, 0), "TCG-15")
    np.testing.assert_allclose(item["feature"].numpy(), expect)
    assert item["label"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert item["boundary"].tolist() == [1, 0, 0, 1, 1, 0, 0]
    ds2 = MSTCNDataset(root, root / "splits" / "train.split1.bundle", "TCG-15", feature_layout=layout, cache=True)
    a, b = ds2[1], ds2[1]
    assert torch.equal(a["feature"], b["feature"]) and a["feature"] is not b["feature"]


def test_mstcn_errors(tmp_path):
    root, _ = make_mstcn(tmp_path)
    (root / "splits" / "empty.bundle").write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.bundle: split file lists no videos"):
        MSTCNDataset(root, "empty.bundle", "TCG-15")
    with pytest.raises(FileNotFoundError, match="nothere.bundle"):
        MSTCNDataset(root, "nothere.bundle", "TCG-15")
    with pytest.raises(ValueError, match="feature_layout"):
        MSTCNDataset(root, "train.split1.bundle", "TCG-15", feature_layout="TVC")
    (root / "groundTruth" / "v2.txt").write_text("jump\nrun\njump\njump\njump\n")
    (root / "groundTruth" / "v1.txt").write_text("idle\n" * 6)
    ds = MSTCNDataset(root, "train.split1.bundle", "TCG-15")
    with pytest.raises(ValueError, match=r"length mismatch: .*v1\.npy has 7 frames .*v1\.txt has 6"):
        ds[0]
    with pytest.raises(ValueError, match=r"v2\.txt:2: class 'run' is not in the class mapping"):
        ds[1]
    np.save(root / "features" / "v1.npy", np.zeros((3, 7, 18, 1), np.float32))
    with pytest.raises(ValueError, match=r"v1\.npy: .*17 joints"):
        ds[0]
    (root / "features" / "v1.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"features/v1\.npy"):
        ds[0]


def test_csv_dataset_keeps_ignored_frames(tmp_path):
    """Frames labelled 255 (ignored) load as they are: a run at the start, in the middle and at the end."""
    T = 12
    labels = np.array([255, 255, 0, 0, 255, 255, 255, 51, 51, 3, 255, 255], np.int64)
    boundary = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0], np.float32)
    raw = np.random.default_rng().standard_normal((T, 150)).astype(np.float32)
    rows = [write_csv_layout(tmp_path, "ign", raw, labels, boundary=boundary),
            write_csv_layout(tmp_path, "ignf", raw, labels.astype(np.float64), boundary=boundary)]
    ds = CsvSegmentationDataset(make_csv(tmp_path, rows), tmp_path, "PKU-subject", num_classes=52)
    for i in range(2):
        item = ds[i]
        assert item["label"].dtype == torch.int64 and item["label"].tolist() == labels.tolist()
        assert item["boundary"].tolist() == boundary.tolist() and item["feature"].shape == (12, 25, T)
    batch = collate([ds[0], ds[1]])
    assert batch["labels"].tolist() == [labels.tolist()] * 2


@pytest.mark.parametrize("bad, shown", [(52, "[52]"), (300, "[300]"), (-1, "[-1]"), (254, "[254]")])
def test_csv_dataset_out_of_range_label(tmp_path, bad, shown):
    labels = np.array([255, 0, 1, bad, bad, 255], np.int64)
    row = write_csv_layout(tmp_path, "bad", np.random.default_rng().standard_normal((6, 150)).astype(np.float32),
                           labels)
    ds = CsvSegmentationDataset(make_csv(tmp_path, [row]), tmp_path, "PKU-subject", num_classes=52)
    with pytest.raises(ValueError, match=rf"gt_arr/bad\.npy: expected class ids in 0\.\.51 or 255 \(ignored "
                                         rf"frame\), got {re.escape(shown)}"):
        ds[0]


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, 1.5])
def test_csv_dataset_float_labels_must_be_whole_numbers(tmp_path, bad):
    """Float label files are read when every value is a whole number; inf, NaN and fractions are refused."""
    labels = np.array([0, 1, bad, 1], np.float64)
    row = write_csv_layout(tmp_path, "f", np.zeros((4, 150), np.float32), labels)
    ds = CsvSegmentationDataset(make_csv(tmp_path, [row]), tmp_path, "PKU-subject", num_classes=52)
    with pytest.raises(ValueError, match=r"gt_arr/f\.npy: expected integer class ids, got non-integral values"):
        ds[0]


def test_csv_dataset_negative_index_counts_from_the_end(tmp_path):
    rows = [write_csv_layout(tmp_path, name, np.random.default_rng(i).standard_normal((4, 150)).astype(np.float32),
                             np.zeros(4, np.int64)) for i, name in enumerate(("a", "b"))]
    ds = CsvSegmentationDataset(make_csv(tmp_path, rows), tmp_path, "PKU-subject", num_classes=52)
    assert ds[-1]["name"] == "b" and torch.equal(ds[-1]["feature"], ds[1]["feature"])
    with pytest.raises(IndexError, match="index -3 out of range for 2 videos"):
        ds[-3]


def test_csv_dataset_labels_must_be_one_dimensional(tmp_path):
    row = write_csv_layout(tmp_path, "m", np.zeros((4, 150), np.float32), np.zeros(4, np.int64))
    np.save(tmp_path / "PKU-subject" / "gt_arr" / "m.npy", np.zeros((4, 1), np.int64))
    ds = CsvSegmentationDataset(make_csv(tmp_path, [row]), tmp_path, "PKU-subject", num_classes=52)
    with pytest.raises(ValueError, match=r"gt_arr/m\.npy: expected non-empty frame labels \(T,\), got shape "
                                         r"\(4, 1\)"):
        ds[0]


def test_class_count_must_stay_below_the_ignore_label(tmp_path):
    row = write_csv_layout(tmp_path, "v", np.zeros((4, 150), np.float32), np.zeros(4, np.int64))
    csv = make_csv(tmp_path, [row])
    assert CsvSegmentationDataset(csv, tmp_path, "PKU-subject", num_classes=255).num_classes == 255
    with pytest.raises(ValueError, match=r"num_classes: at most 255 classes are supported .*got 256"):
        CsvSegmentationDataset(csv, tmp_path, "PKU-subject", num_classes=256)
    root, _ = make_mstcn(tmp_path)
    (root / "mapping.txt").write_text("".join(f"{i} c{i}\n" for i in range(256)))
    with pytest.raises(ValueError, match=r"mapping\.txt: at most 255 classes are supported .*got 256"):
        MSTCNDataset(root, "train.split1.bundle", "TCG-15")


def test_full_rate_boundary_without_features(tmp_path):
    """The stored (full-rate, undownsampled) boundary array, read without touching the feature file."""
    d = tmp_path / "LARA"
    for sub in ("gt_arr", "gt_boundary_arr"):
        (d / sub).mkdir(parents=True)
    stored = np.array([1, 0, 0, 0, 0, 1, 1, 0, 0], np.float64)
    np.save(d / "gt_boundary_arr/L01.npy", stored)
    np.save(d / "gt_boundary_arr/L02.npy", np.zeros((2, 3)))
    csv = make_csv(tmp_path, ["/LARA/features/L01.npy,/LARA/gt_arr/L01.npy,/LARA/gt_boundary_arr/L01.npy\n",
                              "/LARA/features/L02.npy,/LARA/gt_arr/L02.npy,/LARA/gt_boundary_arr/L02.npy\n"])
    ds = CsvSegmentationDataset(csv, tmp_path, "LARA")  # no feature file exists at all
    got = ds.full_rate_boundary(0)
    assert got.dtype == np.float64 and got.tolist() == stored.tolist()
    assert ds.boundary_source(0) == str(tmp_path) + "/LARA/gt_boundary_arr/L01.npy"
    with pytest.raises(ValueError, match=r"gt_boundary_arr/L02\.npy: expected boundary \(T,\)"):
        ds.full_rate_boundary(1)
    root, _ = make_mstcn(tmp_path)
    for v in ("v1", "v2"):
        (root / "features" / f"{v}.npy").unlink()
    ds = MSTCNDataset(root, "train.split1.bundle", "TCG-15", rate=4)  # derived from the labels, not downsampled
    assert ds.full_rate_boundary(0).tolist() == [1, 0, 0, 1, 1, 0, 0]
    assert ds.full_rate_boundary(1).tolist() == [1, 0, 0, 0, 0]
    assert ds.boundary_source(1) == str(root / "groundTruth" / "v2.txt")


def test_carve_validation_published_rule():
    # make_csv_files: 0-based position j → validation when j % 10 == 9
    train, val = carve_validation(25, 10)
    assert val == [9, 19] and train == [j for j in range(25) if j not in (9, 19)]
    assert carve_validation(8, 4) == ([0, 1, 2, 4, 5, 6], [3, 7])
    assert carve_validation(10, 10) == (list(range(9)), [9])
    assert carve_validation(9, 10) == (list(range(9)), [])  # too short: no validation video
    assert carve_validation(0, 10) == ([], [])
    with pytest.raises(ValueError, match=r"every: expected ≥ 2 .*got 1"):
        carve_validation(5, 1)


def _one_video_csv(tmp_path, feature, labels=None, boundary=None):
    """A CsvSegmentationDataset (PKU-subject) of one video "v" with the given feature array (raw or built)."""
    T = feature.shape[0] if feature.ndim == 2 else feature.shape[-1]
    labels = np.zeros(T, np.int64) if labels is None else labels
    row = write_csv_layout(tmp_path, "v", feature, labels, boundary=boundary)
    return CsvSegmentationDataset(make_csv(tmp_path, [row]), tmp_path, "PKU-subject")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, bool, "<U4"])
@pytest.mark.parametrize("built", [False, True], ids=["raw", "built"])
def test_feature_files_of_non_real_numbers_are_refused(tmp_path, dtype, built):
    """Complex features lost their imaginary part (with a numpy warning), booleans loaded as 0/1 floats and
    strings failed without naming the file."""
    shape = (12, 25, 6) if built else (6, 150)
    ds = _one_video_csv(tmp_path, np.ones(shape).astype(dtype))
    with pytest.raises(ValueError, match=rf"features/v\.npy: expected real-valued \(integer or float\) features, "
                                         rf"got dtype {re.escape(str(np.dtype(dtype)))}"):
        ds[0]


@pytest.mark.parametrize("layout", ["CTVM", "CVT"])
def test_mstcn_feature_files_of_non_real_numbers_are_refused(tmp_path, layout):
    root, arrays = make_mstcn(tmp_path, layout)
    np.save(root / "features" / "v1.npy", arrays["v1"] + 1j)
    with pytest.raises(ValueError, match=r"features/v1\.npy: expected real-valued .*got dtype complex"):
        MSTCNDataset(root, "train.split1.bundle", "TCG-15", feature_layout=layout)[0]


@pytest.mark.parametrize("values, shown", [([0, 2, 1, 0], "[2"), ([1, 0.5, 0, 0], "[0.5]"),
                                           ([1, -1, 0, 0], "[-1"), ([1, np.nan, 0, 0], "[nan]")])
def test_boundary_values_other_than_0_and_1_are_refused(tmp_path, values, shown):
    ds = _one_video_csv(tmp_path, np.ones((4, 150), np.float32), boundary=np.array(values, np.float32))
    for read in (lambda: ds[0], lambda: ds.full_rate_boundary(0)):
        with pytest.raises(ValueError, match=rf"gt_boundary_arr/v\.npy: expected boundary values 0 or 1, "
                                             rf"got {re.escape(shown)}"):
            read()


def test_boundary_files_of_bool_int_and_float_0_1_are_read(tmp_path):
    for dtype in (bool, np.int64, np.float64):
        ds = _one_video_csv(tmp_path, np.ones((4, 150), np.float32), boundary=np.array([1, 0, 1, 1], dtype))
        assert ds[0]["boundary"].tolist() == [1, 0, 1, 1]


@pytest.mark.parametrize("boundary, match", [(np.zeros(0, np.float32), r"expected boundary \(T,\) with T ≥ 1, got "
                                                                       r"shape \(0,\)"),
                                             (np.array([1, 0, 1, 0], complex), r"expected .*got dtype complex128")])
def test_empty_and_complex_boundary_files_are_refused(tmp_path, boundary, match):
    row = write_csv_layout(tmp_path, "v", np.ones((4, 150), np.float32), np.zeros(4, np.int64), boundary=boundary)
    ds = CsvSegmentationDataset(make_csv(tmp_path, [row]), tmp_path, "PKU-subject")
    with pytest.raises(ValueError, match=r"gt_boundary_arr/v\.npy: " + match):
        ds.full_rate_boundary(0)


@pytest.mark.parametrize("T", [0, 1])
def test_csv_videos_shorter_than_2_frames_are_refused(tmp_path, T):
    """The model's InstanceNorm needs 2 frames even in eval: refused when read, naming the feature file."""
    ds = _one_video_csv(tmp_path, np.ones((T, 150), np.float32), labels=np.zeros(T, np.int64),
                        boundary=np.ones(T, np.float32))
    with pytest.raises(ValueError, match=rf"features/v\.npy: expected a video of at least 2 frames \(the model's "
                                         rf"InstanceNorm normalises over time\), got {T}"):
        ds[0]


def test_lara_video_of_1_frame_after_downsampling_is_refused(tmp_path):
    d = tmp_path / "LARA"
    for sub in ("features", "gt_arr", "gt_boundary_arr"):
        (d / sub).mkdir(parents=True)
    np.save(d / "features/L01.npy", np.ones((6, 4, 19, 1), np.float32))  # 4 frames → 1 after ×4 downsampling
    np.save(d / "gt_arr/L01.npy", np.zeros(4, np.int64))
    np.save(d / "gt_boundary_arr/L01.npy", np.array([1, 0, 0, 0], np.float32))
    csv = make_csv(tmp_path, ["/LARA/features/L01.npy,/LARA/gt_arr/L01.npy,/LARA/gt_boundary_arr/L01.npy\n"])
    with pytest.raises(ValueError, match=r"features/L01\.npy: expected a video of at least 2 frames after temporal "
                                         r"downsampling by 4 .*got 1"):
        CsvSegmentationDataset(csv, tmp_path, "LARA")[0]


def test_mstcn_video_of_1_frame_and_empty_label_file_are_refused(tmp_path):
    root, _ = make_mstcn(tmp_path)
    np.save(root / "features" / "v1.npy", np.ones((3, 1, 17, 1), np.float32))
    (root / "groundTruth" / "v1.txt").write_text("idle\n")
    (root / "groundTruth" / "v2.txt").write_text("\n")
    ds = MSTCNDataset(root, "train.split1.bundle", "TCG-15")
    with pytest.raises(ValueError, match=r"features/v1\.npy: expected a video of at least 2 frames .*got 1"):
        ds[0]
    with pytest.raises(ValueError, match=r"groundTruth/v2\.txt: ground-truth file has no frames"):
        ds[1]
