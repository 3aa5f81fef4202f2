"""Built-in synthetic skeleton action-segmentation dataset (the default dataset of ``trgnet train``).

Each video is a sequence of action segments performed by a 25-joint Kinect-v2 skeleton (PKU-MMD joint order
and bones, ``trgnet_fast.skeletons``). A pose is a set of per-joint local rotations (Euler angles) plus a
root translation; forward kinematics along the skeleton tree turns it into joint positions. Every action is a
parametric motion of the rest pose (see :data:`ACTIONS`); segments have random durations, the angle/translation
tracks are smoothed with a short Gaussian so that consecutive segments blend over a few frames, and each video
gets a random body size, orientation (rotation about the vertical axis), position, speed and Gaussian sensor
noise. Optionally a second person (idling nearby) is present.

Coordinates follow Kinect camera space: metres, y up, the person about 3 m in front of the camera.

On disk (:func:`make_synthetic`) the data uses the published csv layout (docs/model.md#csv-layout) with
**raw PKU-format features** ``(T, 150)`` = (T, 2 persons, 25 joints, xyz) — so the real PKU feature path
(displacement + root-relative; docs/model.md#features) is exercised — read with
``CsvSegmentationDataset(csv, out_dir, SYNTHETIC_DATASET)``::

    out_dir/features/<video>.npy         float32 (T, 150)
    out_dir/gt_arr/<video>.npy           int64 (T,)
    out_dir/gt_boundary_arr/<video>.npy  float32 (T,)
    out_dir/mapping.txt                  "id name" lines
    out_dir/descriptions.txt             "name: one-sentence description" lines
    out_dir/{train,val,test}.csv         header feature,label,boundary; rows "/features/<video>.npy,..."

Everything is deterministic under ``seed``.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

from trgnet_fast.data.labels import boundary_from_labels, write_mapping

# The dataset key whose skeleton layout / feature construction the synthetic data uses. The number of
# classes is len(ACTIONS) (not PKU's 52): override n_classes when building the model.
SYNTHETIC_DATASET = "PKU-subject"
V = 25

# Kinect v2 joint order (as in PKU-MMD).
JOINT_NAMES = (
    "SpineBase", "SpineMid", "Neck", "Head", "ShoulderLeft", "ElbowLeft", "WristLeft", "HandLeft",
    "ShoulderRight", "ElbowRight", "WristRight", "HandRight", "HipLeft", "KneeLeft", "AnkleLeft", "FootLeft",
    "HipRight", "KneeRight", "AnkleRight", "FootRight", "SpineShoulder", "HandTipLeft", "ThumbLeft",
    "HandTipRight", "ThumbRight",
)
# Parent of every joint in the skeleton tree rooted at SpineBase (-1); these are the PKU bones of graph.py.
PARENT = np.array([-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 6, 11, 10])
# Rest pose (metres): x to the person's left, y up, z forward (towards the camera before the yaw).
REST = np.array([
    [0.00, 1.00, 0.00], [0.00, 1.25, 0.00], [0.00, 1.52, 0.00], [0.00, 1.66, 0.01],   # spine base..head
    [0.18, 1.43, 0.00], [0.21, 1.16, 0.00], [0.22, 0.92, 0.00], [0.22, 0.85, 0.00],   # left arm
    [-0.18, 1.43, 0.00], [-0.21, 1.16, 0.00], [-0.22, 0.92, 0.00], [-0.22, 0.85, 0.00],  # right arm
    [0.09, 0.97, 0.00], [0.10, 0.54, 0.01], [0.10, 0.10, 0.00], [0.10, 0.04, 0.11],   # left leg
    [-0.09, 0.97, 0.00], [-0.10, 0.54, 0.01], [-0.10, 0.10, 0.00], [-0.10, 0.04, 0.11],  # right leg
    [0.00, 1.45, 0.00],                                                                   # spine shoulder
    [0.22, 0.77, 0.00], [0.19, 0.86, 0.03], [-0.22, 0.77, 0.00], [-0.19, 0.86, 0.03],   # hand tips, thumbs
])
# Topological order (parents before children).
_ORDER = [0, 1, 20, 2, 3, 4, 5, 6, 7, 21, 22, 8, 9, 10, 11, 23, 24, 12, 13, 14, 15, 16, 17, 18, 19]

J = {n: i for i, n in enumerate(JOINT_NAMES)}
SL, EL, SR, ER = J["ShoulderLeft"], J["ElbowLeft"], J["ShoulderRight"], J["ElbowRight"]
HL, KL, HR, KR, SMID, NECK = J["HipLeft"], J["KneeLeft"], J["HipRight"], J["KneeRight"], J["SpineMid"], J["Neck"]
AL, AR = J["AnkleLeft"], J["AnkleRight"]

# (name, one-sentence description); the class id is the position in this tuple.
ACTIONS = (
    ("idle", "The person stands still with the arms hanging down, swaying slightly."),
    ("wave_left", "The person raises the left arm above the shoulder and waves the forearm from side to side."),
    ("wave_right", "The person raises the right arm above the shoulder and waves the forearm from side to side."),
    ("squat", "The person repeatedly bends both knees to lower the body and stands up again."),
    ("jump", "The person repeatedly jumps up in place, bending the knees before take-off and on landing."),
    ("kick_right", "The person repeatedly kicks forward with the right leg while standing on the left leg."),
    ("bow", "The person repeatedly bends the upper body forward from the waist and straightens up again."),
    ("raise_both_arms", "The person repeatedly lifts both straight arms sideways above the head and lowers them."),
    ("clap", "The person holds both arms in front of the chest and repeatedly brings the hands together."),
    ("march", "The person marches in place, lifting the knees alternately."),
)
CLASS_NAMES = tuple(a[0] for a in ACTIONS)


def _rot(angles: np.ndarray) -> np.ndarray:
    """Euler angles (..., 3) = (ax, ay, az) → rotation matrices (..., 3, 3) = Rz·Ry·Rx."""
    cx, cy, cz = np.cos(angles[..., 0]), np.cos(angles[..., 1]), np.cos(angles[..., 2])
    sx, sy, sz = np.sin(angles[..., 0]), np.sin(angles[..., 1]), np.sin(angles[..., 2])
    R = np.empty(angles.shape[:-1] + (3, 3))
    R[..., 0, 0] = cz * cy
    R[..., 0, 1] = cz * sy * sx - sz * cx
    R[..., 0, 2] = cz * sy * cx + sz * sx
    R[..., 1, 0] = sz * cy
    R[..., 1, 1] = sz * sy * sx + cz * cx
    R[..., 1, 2] = sz * sy * cx - cz * sx
    R[..., 2, 0] = -sy
    R[..., 2, 1] = cy * sx
    R[..., 2, 2] = cy * cx
    return R


def forward_kinematics(angles: np.ndarray, root: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Joint positions from local joint rotations.

    angles: (T, 25, 3) Euler angles (Rz·Ry·Rx) of each joint's local rotation (rotating its child bones);
    root: (T, 3) SpineBase position; returns (T, 25, 3). Angle 0 everywhere gives the rest pose.
    """
    T = angles.shape[0]
    local = _rot(angles)                       # (T, V, 3, 3)
    offsets = (REST - REST[np.maximum(PARENT, 0)]) * scale
    glob = np.empty_like(local)
    pos = np.empty((T, V, 3))
    for j in _ORDER:
        p = PARENT[j]
        if p < 0:
            glob[:, j] = local[:, j]
            pos[:, j] = root
        else:
            glob[:, j] = glob[:, p] @ local[:, j]
            pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
    return pos


def _action_tracks(action: int, t: np.ndarray, freq: float, amp: float, rng: np.random.Generator):
    """Angle (L, 25, 3) and root-offset (L, 3) tracks of one segment; t = frame index / fps (seconds)."""
    L = t.shape[0]
    ang = np.zeros((L, V, 3))
    off = np.zeros((L, 3))
    w = 2 * np.pi * freq * t
    ph = rng.uniform(0, 2 * np.pi)
    up = 0.5 - 0.5 * np.cos(w)                 # 0 → 1 → 0 per cycle, starts at rest
    ramp = np.clip(t / 0.3, 0, 1)              # 0.3 s to reach a held posture
    name = CLASS_NAMES[action]
    if name == "idle":
        ang[:, SMID, 2] = 0.04 * amp * np.sin(0.5 * w + ph)
        ang[:, SMID, 0] = 0.02 * amp * np.sin(0.3 * w + ph)
        ang[:, SL, 2] = 0.05 * np.sin(0.4 * w + ph)
        ang[:, SR, 2] = -0.05 * np.sin(0.4 * w + ph)
    elif name in ("wave_left", "wave_right"):
        s, e, sign = (SL, EL, 1.0) if name == "wave_left" else (SR, ER, -1.0)
        ang[:, s, 2] = sign * 2.3 * amp * ramp              # upper arm up and out
        ang[:, e, 2] = sign * 0.5 * np.sin(2 * w) * ramp    # forearm waves
        ang[:, e, 0] = -0.3 * ramp
    elif name == "squat":
        depth = 1.2 * amp * up
        ang[:, HL, 0] = ang[:, HR, 0] = -depth
        ang[:, KL, 0] = ang[:, KR, 0] = 2 * depth
        ang[:, AL, 0] = ang[:, AR, 0] = -depth
        ang[:, SL, 0] = ang[:, SR, 0] = -1.2 * up           # arms forward for balance
        off[:, 1] = -0.42 * (1 - np.cos(depth))
    elif name == "jump":
        phase = (w / (2 * np.pi)) % 1.0
        air = np.clip(np.sin(np.pi * (phase - 0.3) / 0.5), 0, None) * (phase > 0.3) * (phase < 0.8)
        crouch = np.exp(-((phase - 0.2) / 0.08) ** 2) + np.exp(-((phase - 0.9) / 0.08) ** 2)
        ang[:, HL, 0] = ang[:, HR, 0] = -0.5 * crouch
        ang[:, KL, 0] = ang[:, KR, 0] = 1.0 * crouch
        ang[:, SL, 2] = 0.5 * air
        ang[:, SR, 2] = -0.5 * air
        off[:, 1] = 0.35 * amp * air - 0.1 * crouch
    elif name == "kick_right":
        kick = up ** 2
        ang[:, HR, 0] = -1.4 * amp * kick
        ang[:, KR, 0] = 0.8 * (1 - kick) * up
        ang[:, SL, 2] = 0.3 * ramp
        ang[:, SR, 2] = -0.3 * ramp
        ang[:, SMID, 0] = 0.15 * kick
    elif name == "bow":
        ang[:, SMID, 0] = 1.1 * amp * up
        ang[:, NECK, 0] = 0.3 * up
        ang[:, SL, 0] = ang[:, SR, 0] = -0.9 * amp * up   # arms keep hanging down
    elif name == "raise_both_arms":
        ang[:, SL, 2] = 2.8 * amp * up
        ang[:, SR, 2] = -2.8 * amp * up
    elif name == "clap":
        ang[:, SL, 0] = ang[:, SR, 0] = -1.4 * ramp           # arms forward
        ang[:, EL, 0] = ang[:, ER, 0] = -0.6 * ramp
        spread = -0.15 + 0.75 * amp * (0.5 + 0.5 * np.cos(2 * w))  # about -0.15 = hands together
        ang[:, SL, 1] = spread * ramp
        ang[:, SR, 1] = -spread * ramp
    elif name == "march":
        left = np.clip(np.sin(w), 0, None)
        right = np.clip(-np.sin(w), 0, None)
        ang[:, HL, 0] = -1.2 * amp * left
        ang[:, KL, 0] = 1.5 * amp * left
        ang[:, HR, 0] = -1.2 * amp * right
        ang[:, KR, 0] = 1.5 * amp * right
        ang[:, SL, 0] = 0.4 * np.sin(w)
        ang[:, SR, 0] = -0.4 * np.sin(w)
    else:  # pragma: no cover
        raise AssertionError(name)
    return ang, off


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (edge-padded), vectorised over the other axes."""
    radius = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], radius, 0), x, np.repeat(x[-1:], radius, 0)])
    flat = pad.reshape(pad.shape[0], -1)
    out = np.zeros((x.shape[0], flat.shape[1]))
    for i, w in enumerate(k):
        out += w * flat[i:i + x.shape[0]]
    return out.reshape(x.shape)


def sample_segments(rng: np.random.Generator, length: int, num_classes: int, min_len: int = 30,
                    max_len: int = 150) -> np.ndarray:
    """Frame labels (length,) int64: consecutive segments of random duration U{min_len..max_len} (the last one
    truncated, merged into its predecessor when shorter than min_len // 2), neighbouring classes differ."""
    labels = np.empty(length, dtype=np.int64)
    t, prev = 0, -1
    while t < length:
        d = int(rng.integers(min_len, max_len + 1))
        if length - (t + d) < min_len // 2:
            d = length - t
        c = int(rng.integers(num_classes - 1)) if prev >= 0 else int(rng.integers(num_classes))
        if prev >= 0 and c >= prev:
            c += 1
        labels[t:t + d] = c
        t, prev = t + d, c
    return labels


def _person(rng, labels, fps, noise, yaw, position, idle_only=False):
    """Positions (T, 25, 3) of one person performing ``labels`` (or idling)."""
    T = labels.shape[0]
    scale = rng.uniform(0.85, 1.15)
    speed = rng.uniform(0.75, 1.3)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], T]
    ang = np.zeros((T, V, 3))
    off = np.zeros((T, 3))
    for s, e in zip(starts, ends):
        action = 0 if idle_only else int(labels[s])
        t = np.arange(e - s) / fps
        fast = CLASS_NAMES[action] in ("wave_left", "wave_right", "clap")
        freq = speed * rng.uniform(0.8, 1.2) * (1.5 if fast else 0.9)
        ang[s:e], off[s:e] = _action_tracks(action, t, freq, rng.uniform(0.85, 1.1), rng)
    ang = _smooth(ang, 2.0)                 # blends neighbouring segments over a few frames
    off = _smooth(off, 2.0)
    ang[:, 0, 1] += yaw                     # orientation: rotation of the whole body about the vertical axis
    c, s_ = np.cos(yaw), np.sin(yaw)
    off_world = np.stack([c * off[:, 0] + s_ * off[:, 2], off[:, 1], -s_ * off[:, 0] + c * off[:, 2]], axis=1) * scale
    root = position[None, :] + np.array([0.0, scale * REST[0, 1], 0.0]) + off_world
    pos = forward_kinematics(ang, root, scale)
    return pos + rng.normal(0.0, noise, pos.shape)


def generate_video(rng: np.random.Generator, length: int, p_two_persons: float = 0.2, noise: float = 0.005,
                   fps: float = 30.0, min_segment: int = 30, max_segment: int = 150):
    """One synthetic video: (raw (T, 150) float32 PKU-format skeleton, labels (T,) int64)."""
    labels = sample_segments(rng, length, len(ACTIONS), min_segment, max_segment)
    yaw = rng.uniform(-np.pi / 3, np.pi / 3)
    position = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-1.2, -0.9), rng.uniform(2.5, 3.5)])
    raw = np.zeros((length, 2, V, 3))
    raw[:, 0] = _person(rng, labels, fps, noise, yaw, position)
    if rng.uniform() < p_two_persons:
        side = rng.choice([-1.0, 1.0])
        position2 = position + np.array([side * rng.uniform(0.8, 1.2), 0.0, rng.uniform(-0.3, 0.3)])
        raw[:, 1] = _person(rng, labels, fps, noise, yaw + rng.uniform(-0.5, 0.5), position2, idle_only=True)
    return raw.reshape(length, 150).astype(np.float32), labels


def make_synthetic(out_dir, n_train: int = 120, n_val: int = 20, n_test: int = 30, seed: int = 0,
                   min_frames: int = 300, max_frames: int = 600, p_two_persons: float = 0.2,
                   noise: float = 0.005, min_segment: int = 30, max_segment: int = 150) -> dict:
    """Write the synthetic dataset to ``out_dir`` (layout in the module docstring); deterministic under seed.

    Video lengths are U{min_frames..max_frames}. Returns dict(dataset_dir, dataset (the key for the readers and
    the skeleton layout), num_classes, class_names, mapping, descriptions, train_csv, val_csv, test_csv).
    """
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError("make_synthetic: need non-negative split sizes, not all zero")
    if not 2 <= min_frames <= max_frames:
        raise ValueError(f"make_synthetic: need 2 ≤ min_frames ≤ max_frames, got {min_frames}, {max_frames}")
    out_dir = os.fspath(out_dir)
    for sub in ("features", "gt_arr", "gt_boundary_arr"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    write_mapping(os.path.join(out_dir, "mapping.txt"), list(CLASS_NAMES))
    with open(os.path.join(out_dir, "descriptions.txt"), "w", encoding="utf-8") as f:
        for name, desc in ACTIONS:
            f.write(f"{name}: {desc}\n")
    root_seq = np.random.SeedSequence(seed)
    result = {"dataset_dir": out_dir, "dataset": SYNTHETIC_DATASET, "num_classes": len(ACTIONS),
              "class_names": list(CLASS_NAMES), "mapping": os.path.join(out_dir, "mapping.txt"),
              "descriptions": os.path.join(out_dir, "descriptions.txt")}
    for split, n, child in zip(("train", "val", "test"), (n_train, n_val, n_test), root_seq.spawn(3)):
        rows = []
        for i, vseq in enumerate(child.spawn(n)):
            rng = np.random.default_rng(vseq)
            name = f"{split}_{i:04d}"
            length = int(rng.integers(min_frames, max_frames + 1))
            raw, labels = generate_video(rng, length, p_two_persons, noise, min_segment=min_segment,
                                         max_segment=max_segment)
            np.save(os.path.join(out_dir, "features", name + ".npy"), raw)
            np.save(os.path.join(out_dir, "gt_arr", name + ".npy"), labels)
            np.save(os.path.join(out_dir, "gt_boundary_arr", name + ".npy"), boundary_from_labels(labels))
            rows.append(f"/features/{name}.npy,/gt_arr/{name}.npy,/gt_boundary_arr/{name}.npy")
        csv_path = os.path.join(out_dir, f"{split}.csv")
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write("feature,label,boundary\n" + "".join(r + "\n" for r in rows))
        result[f"{split}_csv"] = csv_path
    return result


_STAMP = "synthetic.json"


def ensure_synthetic(out_dir, **kwargs) -> dict:
    """Return the synthetic dataset in ``out_dir``, generating it first unless ``out_dir`` already holds one made
    with the same arguments (recorded in ``out_dir/synthetic.json``, written last). ``kwargs`` are those of
    :func:`make_synthetic`. A stale or partial folder is regenerated (its known subfolders/files replaced)."""
    out_dir = os.fspath(out_dir)
    params = {"version": 1, **kwargs}
    stamp = os.path.join(out_dir, _STAMP)
    if os.path.isfile(stamp):
        try:
            with open(stamp, encoding="utf-8") as f:
                saved = json.load(f)
            if saved.get("params") == params:
                return saved["info"]
        except (OSError, ValueError, KeyError):
            pass
        os.remove(stamp)
    for sub in ("features", "gt_arr", "gt_boundary_arr"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    info = make_synthetic(out_dir, **kwargs)
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump({"params": params, "info": info}, f, indent=1)
    return info
