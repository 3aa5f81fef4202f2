"""Feature construction (docs/model.md#features) against straightforward loop implementations.

build_features returns float32 (the published dtype): its differences of O(1) coordinates match the loops within
atol 1e-6 (a few float32 ulps); the MCFS pixel normalisation within 1e-5."""
import re

import numpy as np
import pytest

from trgnet_fast.data.features import (build_features, displacement, features_from_array, features_from_ctvm,
                                       root_relative)


def loop_valid(x):
    C, T, V, M = x.shape
    frames = [t for t in range(T) if any(x[c, t, v, m] != 0 for c in range(C) for v in range(V) for m in range(M))]
    return (frames[0], frames[-1]) if frames else (None, None)


def loop_displacement(x):
    C, T, V, M = x.shape
    out = np.zeros_like(x)
    first, last = loop_valid(x)
    if first is None:
        return out
    for t in range(first, last):  # last valid frame stays 0
        for c in range(C):
            for v in range(V):
                for m in range(M):
                    out[c, t, v, m] = x[c, t + 1, v, m] - x[c, t, v, m]
    return out


def loop_relative(x, ref):
    C, T, V, M = x.shape
    out = np.zeros_like(x)
    first, last = loop_valid(x)
    if first is None:
        return out
    for t in range(first, last + 1):
        for c in range(C):
            for v in range(V):
                for m in range(M):
                    out[c, t, v, m] = x[c, t, v, m] - x[c, t, ref, m]
    return out


def padded_skeleton(rng, C, T, V, M, lead, trail):
    x = rng.standard_normal((C, T, V, M)).astype(np.float32)
    x[:, :lead] = 0
    if trail:
        x[:, T - trail:] = 0
    return x


@pytest.mark.parametrize("lead,trail", [(0, 0), (2, 3), (0, 4), (3, 0)])
def test_displacement_and_relative_match_loops(lead, trail):
    rng = np.random.default_rng(lead * 10 + trail)
    x = padded_skeleton(rng, 3, 11, 5, 2, lead, trail)
    x[:, lead + 2] = 0  # an all-zero frame inside the valid range stays part of it
    np.testing.assert_array_equal(displacement(x), loop_displacement(x))
    for ref in (0, 2):
        np.testing.assert_array_equal(root_relative(x, ref), loop_relative(x, ref))


def test_all_zero_and_single_frame():
    z = np.zeros((3, 4, 5, 1), np.float32)
    assert not displacement(z).any() and not root_relative(z, 0).any()
    x = np.zeros((3, 4, 5, 1), np.float32)
    x[:, 2] = 1.0
    x[0, 2, 3] = 4.0
    assert not displacement(x).any()
    np.testing.assert_array_equal(root_relative(x, 0), loop_relative(x, 0))


def test_helpers_reject_bad_shape():
    with pytest.raises(ValueError, match=r"\(C, T, V, M\)"):
        displacement(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="ref_joint"):
        root_relative(np.zeros((3, 4, 5, 1)), 5)


def test_pku_features_channel_layout():
    rng = np.random.default_rng(0)
    T = 9
    raw = rng.standard_normal((T, 150)).astype(np.float32)
    raw[:2] = 0
    raw[-1] = 0
    out = build_features(raw, "PKU-subject")
    assert out.shape == (12, 25, T) and out.dtype == np.float32
    ctvm = np.zeros((3, T, 25, 2), np.float32)
    for t in range(T):
        for m in range(2):
            for v in range(25):
                for c in range(3):
                    ctvm[c, t, v, m] = raw[t, m * 75 + v * 3 + c]
    d, r = loop_displacement(ctvm), loop_relative(ctvm, 0)
    for m in range(2):
        for j in range(6):
            expect = d[j, :, :, m] if j < 3 else r[j - 3, :, :, m]
            np.testing.assert_allclose(out[6 * m + j], expect.T, rtol=0, atol=1e-6)


def test_pku_missing_second_person_is_zero():
    raw = np.random.default_rng(1).standard_normal((6, 150)).astype(np.float32)
    raw[:, 75:] = 0
    out = build_features(raw, "PKU-view")
    assert not out[6:].any() and out[:6].any()


def test_lara_features():
    rng = np.random.default_rng(2)
    raw = rng.standard_normal((6, 8, 19, 1)).astype(np.float32)
    raw[:, -2:] = 0
    out = build_features(raw, "LARA")
    assert out.shape == (12, 19, 8)
    np.testing.assert_allclose(out[:6], loop_displacement(raw)[..., 0].transpose(0, 2, 1), atol=1e-6)
    np.testing.assert_allclose(out[6:], loop_relative(raw, 0)[..., 0].transpose(0, 2, 1), atol=1e-6)


def test_tcg_features_use_joint_2():
    rng = np.random.default_rng(3)
    raw = rng.standard_normal((7, 17, 3)).astype(np.float32)
    out = build_features(raw, "TCG-15")
    assert out.shape == (6, 17, 7)
    ctvm = raw.transpose(2, 0, 1)[..., None]
    np.testing.assert_allclose(out[:3], loop_displacement(ctvm)[..., 0].transpose(0, 2, 1), atol=1e-6)
    np.testing.assert_allclose(out[3:], loop_relative(ctvm, 2)[..., 0].transpose(0, 2, 1), atol=1e-6)
    assert not out[3:, 2].any()


def test_mcfs_features():
    rng = np.random.default_rng(4)
    T = 5
    raw = np.stack([rng.uniform(0, 1280, (T, 25)), rng.uniform(0, 720, (T, 25)), rng.uniform(0, 1, (T, 25))], -1)
    out = build_features(raw.astype(np.float32), "MCFS-130")
    assert out.shape == (2, 25, T)
    for t in range(T):
        for v in range(25):
            ex = (raw[t, v, 0] / 1280 - 0.5) - (raw[t, 8, 0] / 1280 - 0.5)
            ey = (raw[t, v, 1] / 720 - 0.5) - (raw[t, 8, 1] / 720 - 0.5)
            assert abs(out[0, v, t] - ex) < 1e-5 and abs(out[1, v, t] - ey) < 1e-5


def test_generic_ctvm_matches_pku_path():
    raw = np.random.default_rng(5).standard_normal((6, 150)).astype(np.float32)
    ctvm = raw.reshape(6, 2, 25, 3).transpose(3, 0, 2, 1)
    np.testing.assert_array_equal(features_from_ctvm(ctvm, "PKU-subject"), build_features(raw, "PKU-subject"))


def test_bad_raw_shapes_name_the_source():
    with pytest.raises(ValueError, match=r"myfile.*\(T, 150\)"):
        build_features(np.zeros((5, 149)), "PKU-subject", "myfile")
    with pytest.raises(ValueError, match=r"\(6, T, 19, 1\)"):
        build_features(np.zeros((3, 5, 19, 1)), "LARA")
    with pytest.raises(ValueError, match="dataset"):
        build_features(np.zeros((5, 150)), "NTU")


def test_format_detection():
    raw = np.random.default_rng(6).standard_normal((10, 150)).astype(np.float32)
    built = build_features(raw, "PKU-subject")
    np.testing.assert_array_equal(features_from_array(raw, "PKU-subject"), built)
    np.testing.assert_array_equal(features_from_array(built, "PKU-subject"), built)
    with pytest.raises(ValueError, match=r"f\.npy.*expected PKU-subject features"):
        features_from_array(np.zeros((12, 24, 5)), "PKU-subject", "f.npy")
    amb = np.zeros((6, 17, 3), np.float32)  # TCG raw with T=6 and built with T=3
    with pytest.raises(ValueError, match="ambiguous|both"):
        features_from_array(amb, "TCG-15", "a.npy")
    assert features_from_array(amb, "TCG-15", feature_format="built").shape == (6, 17, 3)
    assert features_from_array(amb, "TCG-15", feature_format="raw").shape == (6, 17, 6)


@pytest.mark.parametrize("dataset, shape", [("PKU-subject", (2, 5, 25, 2)), ("PKU-subject", (3, 5, 25, 1)),
                                            ("LARA", (3, 5, 19, 1)), ("TCG-15", (3, 5, 17, 2)),
                                            ("MCFS-130", (3, 5, 25, 2))])
def test_ctvm_with_other_channels_or_persons_is_refused(dataset, shape):
    """Features of another channel or person count would reach the model with the wrong C_in: refused here."""
    with pytest.raises(ValueError, match=rf"{dataset}: expected a \(C, T, V, M\) array with C = \d channels and "
                                         r"M = \d person\(s\).*" + re.escape(f"got shape {shape}")):
        features_from_ctvm(np.zeros(shape, np.float32), dataset)
