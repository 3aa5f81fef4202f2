"""Mappings, boundaries and temporal downsampling (docs/model.md#labels-and-boundaries)."""
import numpy as np
import pytest
import torch

from trgnet_fast.data.labels import (boundary_from_labels, downsample, read_ground_truth, read_mapping,
                                     temporal_rate, write_mapping)


def loop_boundary(labels):
    T = len(labels)
    b = [0.0] * T
    b[0] = 1.0
    for i in range(1, T):
        if labels[i] != labels[i - 1]:
            b[i] = 1.0
            if i + 1 < T:
                b[i + 1] = 1.0
    return np.array(b, np.float32)


def test_read_mapping(tmp_path):
    p = tmp_path / "mapping.txt"
    p.write_text("0 NONE\n1 drink water\n\n2 wave\n")
    assert read_mapping(p) == ["NONE", "drink water", "wave"]
    write_mapping(tmp_path / "m2.txt", ["a", "b c"])
    assert read_mapping(tmp_path / "m2.txt") == ["a", "b c"]


@pytest.mark.parametrize("text,match", [
    ("0 a\n2 b\n", r"mapping\.txt:2: expected class id 1"),
    ("1 a\n", r"mapping\.txt:1: expected class id 0"),
    ("0 a\nx b\n", r"mapping\.txt:2: expected an integer"),
    ("0 a\n1\n", r"mapping\.txt:2: expected 'id name'"),
    ("", r"mapping\.txt: class mapping file is empty"),
    ("0 a\n1 a\n", "duplicate"),
])
def test_read_mapping_errors(tmp_path, text, match):
    p = tmp_path / "mapping.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_mapping(p)


def test_read_mapping_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_mapping(tmp_path / "nope.txt")


def test_ground_truth(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("a\na\nb\n")
    np.testing.assert_array_equal(read_ground_truth(p, {"a": 0, "b": 1}), [0, 0, 1])
    p.write_text("a\nc\n")
    with pytest.raises(ValueError, match=r"v\.txt:2: class 'c'"):
        read_ground_truth(p, {"a": 0})


@pytest.mark.parametrize("seed", range(5))
def test_boundary_matches_loop(seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 4, 8), rng.integers(1, 5, 8))
    np.testing.assert_array_equal(boundary_from_labels(labels), loop_boundary(labels))


def test_boundary_examples():
    np.testing.assert_array_equal(boundary_from_labels([3, 3, 3]), [1, 0, 0])
    np.testing.assert_array_equal(boundary_from_labels([0, 0, 1, 1, 1, 2]), [1, 0, 1, 1, 0, 1])  # no overflow
    np.testing.assert_array_equal(boundary_from_labels([5]), [1])
    with pytest.raises(ValueError):
        boundary_from_labels([])


def test_downsample_numpy_and_torch():
    labels = np.array([0] * 5 + [1] * 6 + [2] * 3)
    boundary = boundary_from_labels(labels)
    feats = np.arange(2 * 14).reshape(2, 14)
    f, lab, b = downsample(feats, labels, boundary, 4)
    np.testing.assert_array_equal(f, feats[:, ::4])
    np.testing.assert_array_equal(lab, labels[::4])
    expect = np.zeros(4, np.float32)
    expect[np.flatnonzero(boundary) // 4] = 1
    np.testing.assert_array_equal(b, expect)
    ft, lt, bt = downsample(torch.from_numpy(feats), torch.from_numpy(labels), torch.from_numpy(boundary), 4)
    np.testing.assert_array_equal(bt.numpy(), expect)
    assert downsample(feats, labels, boundary, 1)[0] is feats


def test_downsample_marks_only_exact_ones():
    """Published TempDownSamp: only full-rate values equal to 1.0 leave a mark at idx // rate (a boundary on
    a dropped frame moves to the kept one); 0.5, 0.999 or 2 leave none."""
    labels = np.arange(10)
    boundary = np.array([0, 1, 0, 0, 0.5, 0, 0.999, 2, 0, 1.0], np.float32)
    _, lab, b = downsample(np.zeros((3, 10)), labels, boundary, 4)
    assert lab.tolist() == [0, 4, 8] and b.dtype == np.float32 and b.tolist() == [1, 0, 1]  # from frames 1, 9
    _, _, bt = downsample(torch.zeros(3, 10), torch.from_numpy(labels), torch.from_numpy(boundary), 4)
    assert bt.dtype == torch.float32 and bt.tolist() == [1, 0, 1]
    _, _, bi = downsample(np.zeros((3, 10)), labels, np.array([0, 0, 0, 0, 1, 0, 0, 0, 2, 0]), 4)
    assert bi.tolist() == [0, 1, 0]


def test_rates():
    assert temporal_rate("LARA") == 4 and temporal_rate("PKU-view") == 1 and temporal_rate("MCFS-22") == 1
