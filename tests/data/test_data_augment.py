"""SAEP augmentation (docs/model.md#saep-augmentation)."""
import math

import pytest
import torch

from trgnet_fast.data.augment import OCCLUDED, ROTATED, UNCHANGED, axis_rotation, saep, saep_batch


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_branch_fractions_and_occlusion():
    N, C, V, T = 4000, 12, 25, 3
    x = torch.randn(N, C, V, T)
    out, info = saep(x, "PKU-subject", generator=gen(0), return_info=True)
    mode = info["mode"]
    frac = [(mode == m).float().mean().item() for m in (OCCLUDED, UNCHANGED, ROTATED)]
    assert abs(frac[0] - 0.35) < 0.03 and abs(frac[1] - 0.30) < 0.03 and abs(frac[2] - 0.35) < 0.03
    occ = mode == OCCLUDED
    k = info["occluded"].sum(1)
    assert (k[occ] >= 1).all() and (k[occ] <= 12).all() and (k[~occ] == 0).all()
    counts = torch.bincount(k[occ], minlength=13)[1:].float()
    assert (counts > 0.5 * counts.mean()).all()  # k roughly uniform over 1..12
    # Occluded joints are exactly zero on all channels and frames; the rest untouched.
    m = info["occluded"][:, None, :, None].expand_as(x)
    assert (out[m] == 0).all()
    keep = occ[:, None, None, None].expand_as(x) & ~m
    assert torch.equal(out[keep], x[keep])
    unchanged = (mode == UNCHANGED)
    assert torch.equal(out[unchanged], x[unchanged])
    # joints chosen roughly uniformly
    per_joint = info["occluded"][occ].float().mean(0)
    assert per_joint.min() > 0.5 * per_joint.mean()


@pytest.mark.parametrize("dataset,axis,C,V", [("PKU-view", 1, 12, 25), ("LARA", 2, 12, 19), ("TCG-15", 2, 6, 17)])
def test_rotation_is_proper_about_axis(dataset, axis, C, V):
    N, T = 400, 4
    x = torch.randn(N, C, V, T, dtype=torch.float64)
    out, info = saep(x, dataset, generator=gen(1), p_occlusion=0.0, p_rotation=1.0, return_info=True)
    assert (info["mode"] == ROTATED).all()
    theta = info["theta"]
    assert theta.min() >= -math.pi and theta.max() <= math.pi and theta.abs().max() > 3.0
    xt = x.reshape(N, C // 3, 3, V, T)
    ot = out.reshape(N, C // 3, 3, V, T)
    torch.testing.assert_close(ot.norm(dim=2), xt.norm(dim=2))          # norms per triple preserved
    torch.testing.assert_close(ot[:, :, axis], xt[:, :, axis])          # the axis component is unchanged
    # recover each sample's linear map by least squares: a proper rotation about `axis`
    A = xt.permute(0, 1, 3, 4, 2).reshape(N, -1, 3)
    B = ot.permute(0, 1, 3, 4, 2).reshape(N, -1, 3)
    R = torch.linalg.lstsq(A, B).solution.transpose(1, 2)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand(N, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(N, dtype=R.dtype))
    torch.testing.assert_close(R, axis_rotation(theta.double(), "xyz"[axis]))


def test_rotation_matrix_convention():
    R = axis_rotation(torch.tensor([math.pi / 2]), "y")[0]
    torch.testing.assert_close(R @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]))
    R = axis_rotation(torch.tensor([math.pi / 2]), "z")[0]
    torch.testing.assert_close(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))


def test_mcfs_never_rotated():
    x = torch.randn(500, 2, 25, 3)
    out, info = saep(x, "MCFS-130", generator=gen(2), return_info=True)
    assert not (info["mode"] == ROTATED).any()
    not_occ = info["mode"] != OCCLUDED
    assert torch.equal(out[not_occ], x[not_occ])
    assert ((info["mode"] == OCCLUDED).float().mean() - 0.35).abs() < 0.06


def test_same_seed_same_result_and_input_untouched():
    x = torch.randn(64, 12, 25, 10)
    x0 = x.clone()
    a = saep(x, "PKU-subject", generator=gen(7))
    b = saep(x, "PKU-subject", generator=gen(7))
    c = saep(x, "PKU-subject", generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(x, x0)


def test_padding_stays_zero_and_batch_dict():
    x = torch.randn(50, 12, 25, 6)
    x[:, :, :, 4:] = 0
    batch = {"x": x, "labels": torch.zeros(50, 6, dtype=torch.long)}
    out = saep_batch(batch, "PKU-subject", generator=gen(3))
    assert out["labels"] is batch["labels"] and not out["x"][..., 4:].any()


def test_probabilities_configurable_and_errors():
    x = torch.randn(200, 12, 25, 2)
    _, info = saep(x, "PKU-subject", generator=gen(4), p_occlusion=0.0, p_rotation=0.0, return_info=True)
    assert (info["mode"] == UNCHANGED).all()
    _, info = saep(x, "PKU-subject", generator=gen(4), p_occlusion=1.0, p_rotation=0.0, return_info=True)
    assert (info["mode"] == OCCLUDED).all()
    with pytest.raises(ValueError):
        saep(x, "PKU-subject", p_occlusion=0.7, p_rotation=0.7)
    with pytest.raises(ValueError, match="divisible by 3"):
        saep(torch.randn(2, 4, 25, 2), "PKU-subject")
    with pytest.raises(ValueError, match=r"\(N, C, V, T\)"):
        saep(torch.randn(2, 12, 25), "PKU-subject")


@pytest.mark.gpu
def test_runs_on_device_with_device_generator():
    x = torch.randn(16, 12, 25, 8, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    out = saep(x, "PKU-subject", generator=g)
    assert out.device == x.device


@pytest.mark.parametrize("dataset", ["PKU-subject", "TCG-15", "MCFS-130"])
def test_packed_batch_gets_the_padded_batch_draws_per_sequence(dataset):
    """On a packed batch every draw is per sequence: the result is the padded batch's with the same generator
    state, laid out packed (docs/model.md#packed-batches)."""
    from trgnet_fast.model.packing import packed_sequences, unpack

    C = {"PKU-subject": 12, "TCG-15": 6, "MCFS-130": 2}[dataset]
    V = {"PKU-subject": 25, "TCG-15": 17, "MCFS-130": 25}[dataset]
    lengths = (7, 3, 5, 9, 4, 6, 2, 8, 5, 3, 6, 4)
    packed = packed_sequences(lengths)
    x_packed = torch.randn(1, C, V, sum(lengths), dtype=torch.float64)
    x_padded = unpack(x_packed, packed)
    got, info = saep(x_packed, dataset, generator=gen(5), return_info=True, packed=packed)
    want, want_info = saep(x_padded, dataset, generator=gen(5), return_info=True)
    assert torch.equal(unpack(got, packed), want)
    assert torch.equal(info["mode"], want_info["mode"]) and len(info["mode"]) == len(lengths)
    if dataset != "MCFS-130":
        assert set(info["mode"].tolist()) == {OCCLUDED, UNCHANGED, ROTATED}  # the seed reaches every branch
    with pytest.raises(ValueError, match=r"saep: expected a packed x \(1, C, V, 62\)"):
        saep(x_padded, dataset, packed=packed)
