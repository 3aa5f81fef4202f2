"""Raw PKU-MMD phase-1 → published layout converter, on a tiny fake release."""
import numpy as np
import pytest

from trgnet_fast.data.datasets import CsvSegmentationDataset
from trgnet_fast.data.features import build_features
from trgnet_fast.data.labels import read_mapping
from trgnet_fast.data.pku_convert import convert_pku_mmd, read_label_txt, read_skeleton_txt


def fake_release(tmp_path, ids=("0002", "0003"), T=12):
    skel, lab = tmp_path / "skeleton", tmp_path / "label"
    skel.mkdir()
    lab.mkdir()
    rng = np.random.default_rng(0)
    raws = {}
    for i in ids:
        for view in "LMR":
            v = f"{i}-{view}"
            raw = rng.standard_normal((T, 150)).round(4)
            raws[v] = raw
            (skel / f"{v}.txt").write_text("\n".join(" ".join(f"{x:.4f}" for x in row) for row in raw) + "\n")
            (lab / f"{v}.txt").write_text("5,2,4,1\n51,8,20,2\n")
    return skel, lab, raws


def test_convert_and_read_back(tmp_path):
    skel, lab, raws = fake_release(tmp_path)
    split = tmp_path / "cross-subject.txt"
    split.write_text("Training videos:\n0002-L, 0002-M, 0002-R\nValidation videos:\n0003\n")
    out = tmp_path / "out"
    res = convert_pku_mmd(skel, lab, out, cross_subject_file=split)
    names = read_mapping(out / "PKU" / "mapping.txt")
    assert len(names) == 52 and names[0] == "NONE"
    labels = np.load(out / "PKU" / "gt_arr" / "0002-L.npy")
    expect = np.zeros(12, np.int64)
    expect[1:4] = 5          # frames 2..4 (1-based, inclusive)
    expect[7:] = 51          # frames 8..20 clipped to the video
    np.testing.assert_array_equal(labels, expect)
    np.testing.assert_allclose(np.load(out / "PKU" / "features" / "0002-L.npy"),
                               build_features(raws["0002-L"].astype(np.float32), "PKU-view"), atol=1e-6)
    view = res["csv"]["PKU-view"]
    test_rows = open(view["test1"]).read().splitlines()[1:]
    assert [r.split(",")[0] for r in test_rows] == ["/PKU/features/0002-L.npy", "/PKU/features/0003-L.npy"]
    train_val = [r.split(",")[0].split("/")[-1]
                 for f in ("train1", "val1") for r in open(view[f]).read().splitlines()[1:]]
    assert sorted(train_val) == ["0002-M.npy", "0002-R.npy", "0003-M.npy", "0003-R.npy"]
    assert open(view["val1"]).read().splitlines() == ["feature,label,boundary"]  # < 10 training videos: none
    subj = res["csv"]["PKU-subject"]
    assert "0003" not in open(subj["train1"]).read() + open(subj["val1"]).read()
    assert len(open(subj["test1"]).read().splitlines()) == 1 + 3  # header + 0003-L/M/R
    ds = CsvSegmentationDataset(view["test1"], out, "PKU-view", num_classes=52)
    item = ds[0]
    assert item["feature"].shape == (12, 25, 12) and item["label"].tolist() == expect.tolist()


def test_validation_is_every_tenth_sorted_training_video(tmp_path):
    """make_csv_files' rule on the name-sorted training list: 0-based positions 9, 19, … go to val1."""
    ids = [f"{i:04d}" for i in (7, 3, 12, 5, 9, 4, 11, 8, 2, 6, 10)]  # 11 ids → 22 training videos (M, R)
    skel, lab, _ = fake_release(tmp_path, ids=ids, T=8)
    view = convert_pku_mmd(skel, lab, tmp_path / "out")["csv"]["PKU-view"]

    def videos(split):
        return [r.split(",")[0].split("/")[-1][:-4] for r in open(view[split]).read().splitlines()[1:]]

    ordered = [f"{i:04d}-{v}" for i in range(2, 13) for v in "MR"]
    assert videos("val1") == [ordered[9], ordered[19]] == ["0006-R", "0011-R"]
    assert videos("train1") == [v for j, v in enumerate(ordered) if j not in (9, 19)]
    assert videos("test1") == [f"{i:04d}-L" for i in range(2, 13)]


def test_no_cross_subject_file_only_view_split(tmp_path):
    skel, lab, _ = fake_release(tmp_path, ids=("0002",))
    res = convert_pku_mmd(skel, lab, tmp_path / "out")
    assert set(res["csv"]) == {"PKU-view"}


def test_reader_errors(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"s\.txt:1: expected 150 numbers"):
        read_skeleton_txt(str(p))
    for frames in (0, 1):  # the model needs 2 frames: refused before a video that cannot be read back is written
        p.write_text("0.5 " * 150 + "\n" * frames if frames else "\n")
        with pytest.raises(ValueError, match=rf"s\.txt: expected a video of at least 2 frames .*got {frames}"):
            read_skeleton_txt(str(p))
    for bad in ("nan", "inf", "-inf"):
        p.write_text("0.5 " * 150 + "\n" + "0.5 " * 149 + bad + "\n")
        with pytest.raises(ValueError, match=rf"s\.txt:2: expected finite coordinates, got \[{bad}\]"):
            read_skeleton_txt(str(p))
    q = tmp_path / "l.txt"
    q.write_text("52,1,2,1\n")
    with pytest.raises(ValueError, match=r"l\.txt:1: expected class 1\.\.51"):
        read_label_txt(str(q), 5)
    q.write_text("3,4,2,1\n")
    with pytest.raises(ValueError, match=r"l\.txt:1: end frame"):
        read_label_txt(str(q), 5)
    for line in ("3,0,2,1", "3,6,9,1", "3,-4,-2,1"):  # frame base 1, 5 frames: 1..5
        q.write_text("3,1,2,1\n" + line + "\n")
        with pytest.raises(ValueError, match=r"l\.txt:2: segment .* starts outside the video's frames 1\.\.5"):
            read_label_txt(str(q), 5)
    q.write_text("3,4,9,1\n")  # runs past the end: clipped
    assert read_label_txt(str(q), 5).tolist() == [0, 0, 0, 3, 3]
    with open(q, "wb") as f:
        f.write(b"\xff\xfe3,1,2\n")
    with pytest.raises(ValueError, match=r"l\.txt: expected a UTF-8 text file"):
        read_label_txt(str(q), 5)
