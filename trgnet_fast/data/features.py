"""Model-input features from raw skeleton arrays (docs/model.md#features).

Two helpers work on raw skeletons shaped ``(C, T, V, M)`` (channels, frames, joints, persons):

* :func:`displacement` — forward frame difference inside the valid frame range;
* :func:`root_relative` — coordinates relative to a reference joint inside the valid frame range.

The *valid frame range* is found once over the whole array: ``start`` = first frame holding any non-zero
value, ``end`` = one past the last such frame (exclusive). Displacement is ``x[t+1] - x[t]`` for
``t in [start, end-2]`` and 0 on every other frame (before ``start``, on the last valid frame ``end-1`` and
after it); root-relative is ``x[:, t, v, m] - x[:, t, ref, m]`` for ``t in [start, end-1]`` and 0 elsewhere.
An all-zero array gives all-zero outputs.

:func:`build_features` turns a raw per-dataset array into the model input ``(C_in, V, T)``:

=================  =====================  ==================  ==========================================
dataset            raw shape              output              rule
=================  =====================  ==================  ==========================================
PKU-subject/-view  (T, 150)               (12, 25, T)         2 persons × [disp xyz, rel-to-joint-0 xyz],
                                                              channel ``6·m + j``
LARA               (6, T, 19, 1)          (12, 19, T)         [disp of 6 channels, rel-to-joint-0 of 6]
TCG-15             (T, 17, 3)             (6, 17, T)          [disp xyz, rel-to-joint-2 xyz]
MCFS-130 / -22     (T, 25, 3)             (2, 25, T)          x/1280-0.5, y/720-0.5, minus joint 8 (MidHip)
=================  =====================  ==================  ==========================================
"""
from __future__ import annotations

import numpy as np

from trgnet_fast.model.validation import MIN_FRAMES  # the model's InstanceNorm needs 2 frames
from trgnet_fast.skeletons import skeleton_layout

# Per skeleton layout: reference joint of the root-relative coordinates.
REF_JOINT = {"PKU": 0, "LARA": 0, "TCG-15": 2, "BODY_25": 8}
# Per skeleton layout: (channels, joints) of the built model input (C_in, V, T).
BUILT_SHAPE = {"PKU": (12, 25), "LARA": (12, 19), "TCG-15": (6, 17), "BODY_25": (2, 25)}
# Per skeleton layout: (channels C, persons M) of the raw (C, T, V, M) skeleton whose features are the model input
# (BODY_25: x, y pixels and a confidence, which is not used).
RAW_CHANNELS_PERSONS = {"PKU": (3, 2), "LARA": (6, 1), "TCG-15": (3, 1), "BODY_25": (3, 1)}
# Raw-shape description per layout (for error messages).
RAW_SHAPE_DOC = {"PKU": "(T, 150)", "LARA": "(6, T, 19, 1)", "TCG-15": "(T, 17, 3)", "BODY_25": "(T, 25, 3)"}

MCFS_WIDTH = 1280.0
MCFS_HEIGHT = 720.0


def check_real_dtype(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` if it holds real numbers (ints or floats); else a ValueError naming ``name`` and the dtype.
    Complex values would lose their imaginary part and booleans, strings or objects are no coordinates."""
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name}: expected real-valued (integer or float) features, got dtype {arr.dtype}")
    return arr


def check_num_frames(num_frames: int, name: str, rate: int = 1) -> None:
    """Refuse a video shorter than :data:`MIN_FRAMES` (counted after temporal downsampling by ``rate``)."""
    if num_frames < MIN_FRAMES:
        after = f" after temporal downsampling by {rate}" if rate != 1 else ""
        raise ValueError(f"{name}: expected a video of at least {MIN_FRAMES} frames{after} (the model's "
                         f"InstanceNorm normalises over time), got {num_frames}")


def _check_ctvm(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a (C, T, V, M) array, got shape {x.shape}")
    return x


def valid_range(x: np.ndarray) -> tuple[int, int]:
    """(start, end) of the frames of a ``(C, T, V, M)`` array holding any non-zero value; end exclusive.

    Returns (0, 0) for an all-zero array.
    """
    x = _check_ctvm(x, "valid_range")
    nonzero = np.flatnonzero(np.any(x != 0, axis=(0, 2, 3)))
    if nonzero.size == 0:
        return 0, 0
    return int(nonzero[0]), int(nonzero[-1]) + 1


def displacement(x: np.ndarray) -> np.ndarray:
    """Forward-difference velocity of a raw skeleton.

    x: (C, T, V, M) → (C, T, V, M), same float dtype (ints become float32).
    ``d[:, t] = x[:, t+1] - x[:, t]`` for t in [start, end-2]; 0 elsewhere (see module docstring).
    """
    x = _check_ctvm(x, "displacement")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    out = np.zeros_like(x)
    start, end = valid_range(x)
    if end - start >= 2:
        out[:, start:end - 1] = x[:, start + 1:end] - x[:, start:end - 1]
    return out


def root_relative(x: np.ndarray, ref_joint: int) -> np.ndarray:
    """Coordinates relative to joint ``ref_joint`` on the valid frames, 0 elsewhere.

    x: (C, T, V, M) → (C, T, V, M), same float dtype (ints become float32).
    """
    x = _check_ctvm(x, "root_relative")
    if not 0 <= ref_joint < x.shape[2]:
        raise ValueError(f"root_relative: ref_joint {ref_joint} out of range for V={x.shape[2]}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    out = np.zeros_like(x)
    start, end = valid_range(x)
    out[:, start:end] = x[:, start:end] - x[:, start:end, ref_joint:ref_joint + 1]
    return out


def features_from_ctvm(x: np.ndarray, dataset: str) -> np.ndarray:
    """Model input from a raw skeleton in (C, T, V, M) layout.

    PKU/LARA/TCG-15: ``concat[displacement, root_relative]`` per person, then persons stacked on the channel
    axis: output channel ``2C·m + j`` (j < C velocity, j ≥ C relative) → (2·C·M, V, T).
    MCFS (BODY_25): channels 0, 1 are pixel x, y → normalised and made relative to joint 8 → (2·M, V, T).
    Returns float32.
    """
    layout = skeleton_layout(dataset)
    where = f"features_from_ctvm({dataset})"
    x = check_real_dtype(_check_ctvm(x, where), where).astype(np.float32, copy=False)
    C, T, V, M = x.shape
    if V != BUILT_SHAPE[layout][1]:
        raise ValueError(f"{dataset}: expected {BUILT_SHAPE[layout][1]} joints, "
                         f"got a (C,T,V,M) array of shape {x.shape}")
    channels, persons = RAW_CHANNELS_PERSONS[layout]
    if (layout != "BODY_25" and C != channels) or M != persons:
        raise ValueError(f"{dataset}: expected a (C, T, V, M) array with C = {channels} channels and M = {persons} "
                         f"person(s) (model input of {BUILT_SHAPE[layout][0]} channels), got shape {x.shape}")
    if layout == "BODY_25":
        if C < 2:
            raise ValueError(f"{dataset}: expected at least 2 channels (x, y pixels), got shape {x.shape}")
        xy = x[:2].copy()
        xy[0] = xy[0] / MCFS_WIDTH - 0.5
        xy[1] = xy[1] / MCFS_HEIGHT - 0.5
        xy = xy - xy[:, :, REF_JOINT[layout]:REF_JOINT[layout] + 1]
        # (2, T, V, M) → (M, 2, V, T) → (2M, V, T)
        return np.ascontiguousarray(xy.transpose(3, 0, 2, 1).reshape(2 * M, V, T))
    feat = np.concatenate([displacement(x), root_relative(x, REF_JOINT[layout])], axis=0)  # (2C, T, V, M)
    return np.ascontiguousarray(feat.transpose(3, 0, 2, 1).reshape(2 * C * M, V, T))


def raw_to_ctvm(raw: np.ndarray, dataset: str, name: str = "raw") -> np.ndarray:
    """Raw per-dataset array (see module docstring) → (C, T, V, M). ``name`` is used in error messages."""
    layout = skeleton_layout(dataset)
    raw = np.asarray(raw)
    if layout == "PKU":
        if raw.ndim != 2 or raw.shape[1] != 150:
            raise ValueError(f"{name}: expected raw PKU skeleton (T, 150), got shape {raw.shape}")
        T = raw.shape[0]
        return raw.reshape(T, 2, 25, 3).transpose(3, 0, 2, 1)
    if layout == "LARA":
        if raw.ndim != 4 or raw.shape[0] != 6 or raw.shape[2:] != (19, 1):
            raise ValueError(f"{name}: expected raw LARA skeleton (6, T, 19, 1), got shape {raw.shape}")
        return raw
    V = BUILT_SHAPE[layout][1]
    if raw.ndim != 3 or raw.shape[1:] != (V, 3):
        raise ValueError(f"{name}: expected raw {dataset} skeleton (T, {V}, 3), got shape {raw.shape}")
    return raw.transpose(2, 0, 1)[..., None]


def build_features(raw: np.ndarray, dataset: str, name: str = "raw") -> np.ndarray:
    """Raw per-dataset array → model input (C_in, V, T) float32 (table in the module docstring)."""
    return features_from_ctvm(raw_to_ctvm(raw, dataset, name), dataset)


def is_raw_shape(shape: tuple, dataset: str) -> bool:
    """Whether ``shape`` is the raw per-dataset shape of ``dataset``."""
    layout = skeleton_layout(dataset)
    shape = tuple(shape)
    if layout == "PKU":
        return len(shape) == 2 and shape[1] == 150
    if layout == "LARA":
        return len(shape) == 4 and shape[0] == 6 and shape[2:] == (19, 1)
    return len(shape) == 3 and shape[1:] == (BUILT_SHAPE[layout][1], 3)


def is_built_shape(shape: tuple, dataset: str) -> bool:
    """Whether ``shape`` is the built model-input shape (C_in, V, T) of ``dataset``."""
    shape = tuple(shape)
    return len(shape) == 3 and shape[:2] == BUILT_SHAPE[skeleton_layout(dataset)]


def features_from_array(arr: np.ndarray, dataset: str, name: str = "array", feature_format: str = "auto") -> np.ndarray:
    """A stored feature array → model input (C_in, V, T) float32.

    feature_format: "raw" (build with :func:`build_features`), "built" (already (C_in, V, T)), or "auto":
    decided by shape — raw if it matches the raw shape of the dataset, built if it matches (C_in, V, T);
    an array matching both (only possible for tiny T, e.g. TCG-15 (6, 17, 3)) is rejected as ambiguous.
    Arrays of other than real numbers (complex, bool, strings) are refused.
    """
    arr = check_real_dtype(arr, name)
    layout = skeleton_layout(dataset)
    raw_ok, built_ok = is_raw_shape(arr.shape, dataset), is_built_shape(arr.shape, dataset)
    expected = f"raw {RAW_SHAPE_DOC[layout]} or built ({BUILT_SHAPE[layout][0]}, {BUILT_SHAPE[layout][1]}, T)"
    if feature_format == "auto":
        if raw_ok and built_ok:
            raise ValueError(f"{name}: shape {arr.shape} is both a raw and a built {dataset} feature shape; "
                             "pass feature_format='raw' or 'built'")
        feature_format = "raw" if raw_ok else "built" if built_ok else ""
        if not feature_format:
            raise ValueError(f"{name}: expected {dataset} features {expected}, got shape {arr.shape}")
    if feature_format == "raw":
        return build_features(arr, dataset, name)
    if feature_format == "built":
        if not built_ok:
            raise ValueError(f"{name}: expected built {dataset} features "
                             f"({BUILT_SHAPE[layout][0]}, {BUILT_SHAPE[layout][1]}, T), got shape {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.float32)
    raise ValueError(f"feature_format: expected 'auto', 'raw' or 'built', got {feature_format!r}")
