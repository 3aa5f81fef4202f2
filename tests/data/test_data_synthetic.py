"""Built-in synthetic dataset: layout, determinism, segment structure, class distinctness."""
import hashlib

import numpy as np
import pytest

from trgnet_fast.data.collate import collate
from trgnet_fast.data.datasets import CsvSegmentationDataset
from trgnet_fast.data.features import build_features
from trgnet_fast.data.labels import boundary_from_labels, read_mapping
from trgnet_fast.data.synthetic import (ACTIONS, CLASS_NAMES, REST, SYNTHETIC_DATASET, forward_kinematics,
                                        generate_video, make_synthetic, sample_segments)
from trgnet_fast.skeletons import LAYOUT_EDGES


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    info = make_synthetic(out, n_train=6, n_val=2, n_test=3, seed=3, min_frames=120, max_frames=200,
                          p_two_persons=0.5)
    return out, info


def test_layout_and_reader(small):
    out, info = small
    assert info["num_classes"] == len(CLASS_NAMES) >= 8 and info["dataset"] == SYNTHETIC_DATASET
    assert read_mapping(out / "mapping.txt") == list(CLASS_NAMES)
    desc = (out / "descriptions.txt").read_text().splitlines()
    assert [d.split(":")[0] for d in desc] == list(CLASS_NAMES) and all(len(d) > 20 for d in desc)
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        ds = CsvSegmentationDataset(info[f"{split}_csv"], out, SYNTHETIC_DATASET, num_classes=info["num_classes"])
        assert len(ds) == n
        for i in range(n):
            item = ds[i]
            T = item["label"].shape[0]
            assert 120 <= T <= 200 and item["feature"].shape == (12, 25, T)
            np.testing.assert_array_equal(item["boundary"].numpy(), boundary_from_labels(item["label"].numpy()))
    raw = np.load(out / "features" / "train_0000.npy")
    assert raw.dtype == np.float32 and raw.ndim == 2 and raw.shape[1] == 150
    batch = collate([ds[0], ds[1]])
    assert batch["x"].shape[:3] == (2, 12, 25)


def test_second_person_present_in_some_videos(small):
    out, _ = small
    second = [np.abs(np.load(p)[:, 75:]).sum() > 0 for p in sorted((out / "features").glob("*.npy"))]
    assert any(second) and not all(second)


def test_deterministic(tmp_path, small):
    out, _ = small
    make_synthetic(tmp_path / "again", n_train=6, n_val=2, n_test=3, seed=3, min_frames=120, max_frames=200,
                   p_two_persons=0.5)
    assert digest(tmp_path / "again") == digest(out)
    make_synthetic(tmp_path / "other", n_train=6, n_val=2, n_test=3, seed=4, min_frames=120, max_frames=200,
                   p_two_persons=0.5)
    assert digest(tmp_path / "other") != digest(out)


@pytest.mark.parametrize("seed", range(20))
def test_segments_cover_every_frame(seed):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(100, 700))
    labels = sample_segments(rng, length, len(CLASS_NAMES), 30, 150)
    assert labels.shape == (length,) and labels.min() >= 0 and labels.max() < len(CLASS_NAMES)
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = np.r_[0, change, length]
    durations = np.diff(bounds)
    assert durations.sum() == length
    assert (durations[:-1] >= 30).all() and (durations[:-1] <= 150).all()
    assert durations[-1] >= 15 or len(durations) == 1


def test_forward_kinematics_rest_pose_and_bone_lengths():
    T = 4
    pos = forward_kinematics(np.zeros((T, 25, 3)), np.tile(REST[0], (T, 1)))
    np.testing.assert_allclose(pos, np.tile(REST, (T, 1, 1)), atol=1e-12)
    ang = np.random.default_rng(0).uniform(-1, 1, (T, 25, 3))
    pos = forward_kinematics(ang, np.zeros((T, 3)), scale=1.1)
    for i, j in LAYOUT_EDGES["PKU"]:
        np.testing.assert_allclose(np.linalg.norm(pos[:, i] - pos[:, j], axis=-1),
                                   1.1 * np.linalg.norm(REST[i] - REST[j]), rtol=1e-12)


def segment_features(seed, n):
    """Yaw-invariant per-segment statistics: joint heights over the root (mean, std), horizontal distance to the
    root, joint speed, root-height std."""
    X, Y = [], []
    for i in range(n):
        raw, lab = generate_video(np.random.default_rng([seed, i]), 400, p_two_persons=0.0)
        p = raw.reshape(-1, 2, 25, 3)[:, 0]
        rel_y = p[:, :, 1] - p[:, :1, 1]
        lat = np.linalg.norm((p - p[:, :1])[:, :, [0, 2]], axis=-1)
        speed = np.linalg.norm(np.diff(p, axis=0, append=p[-1:]), axis=-1)
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(lab)]):
            if e - s >= 20:
                a, b = s + 5, e - 5
                X.append(np.r_[rel_y[a:b].mean(0), rel_y[a:b].std(0), lat[a:b].mean(0), speed[a:b].mean(0),
                               p[a:b, 0, 1].std()])
                Y.append(lab[s])
    return np.array(X), np.array(Y)


def test_classes_are_kinematically_distinct():
    X, Y = segment_features(0, 30)
    Xt, Yt = segment_features(1, 15)
    assert set(Y) == set(range(len(ACTIONS)))
    mu, sd = X.mean(0), X.std(0) + 1e-6
    centroids = np.stack([((X[Y == c] - mu) / sd).mean(0) for c in range(len(ACTIONS))])
    pred = np.argmin(((((Xt - mu) / sd)[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == Yt).mean() > 0.9
    # and the movement amount differs: idle is the slowest class
    speed = {c: X[Y == c][:, 75:100].mean() for c in range(len(ACTIONS))}
    assert min(speed, key=speed.get) == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic(tmp_path, n_train=0, n_val=0, n_test=0)
    with pytest.raises(ValueError):
        make_synthetic(tmp_path, min_frames=50, max_frames=10)


def test_ensure_synthetic_reuses_and_regenerates(tmp_path):
    from trgnet_fast.data.synthetic import ensure_synthetic
    kw = dict(n_train=2, n_val=1, n_test=1, seed=0, min_frames=60, max_frames=80)
    info = ensure_synthetic(tmp_path, **kw)
    stamp = (tmp_path / "synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, **kw) == info
    assert (tmp_path / "synthetic.json").stat().st_mtime_ns == stamp
    info2 = ensure_synthetic(tmp_path, **{**kw, "n_train": 3})
    assert len(open(info2["train_csv"]).read().splitlines()) == 4
    assert len(list((tmp_path / "features").glob("*.npy"))) == 5


def test_motions_are_the_published_synthetic_dataset():
    """The synthetic dataset is what the README's results were measured on: the mean |feature| of every class over
    8 videos of one seed is pinned (to 1e-5 relative: far above float rounding, far below any change of a motion's
    amplitude, offset or speed)."""
    rng = np.random.default_rng(5)
    sums, counts = np.zeros(len(ACTIONS)), np.zeros(len(ACTIONS))
    for _ in range(8):
        raw, labels = generate_video(rng, 500, p_two_persons=0.5)
        per_frame = np.abs(build_features(raw, "PKU-subject")).mean((0, 1))
        np.add.at(sums, labels, per_frame)
        np.add.at(counts, labels, 1)
    assert counts.tolist() == [581, 127, 578, 207, 185, 588, 237, 170, 1038, 289]
    np.testing.assert_allclose(sums / counts, [0.0721565, 0.0817912, 0.1018678, 0.0836179, 0.1010276, 0.0774223,
                                               0.0991169, 0.1247759, 0.1021026, 0.0649284], rtol=1e-5)
