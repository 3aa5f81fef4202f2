"""SAEP augmentation (random joint occlusion / axial rotation) on a batch, on its device
(docs/model.md#saep-augmentation).

Per sample one uniform draw r ∈ [0, 1):

* r < p_occlusion → occlusion: k ~ U{1..⌊V/2⌋} distinct joints (random permutation) are zeroed in all
  channels and frames;
* r > 1 − p_rotation → rotation about the dataset's vertical axis (PKU: y; LARA, TCG-15: z; MCFS: none, the
  sample is left unchanged) by θ ~ U(−π, π); the (C, V, T) sample is viewed as (C/3, 3, V, T) and every
  consecutive channel triple is multiplied by the same 3×3 rotation;
* otherwise unchanged.

All draws are tensor ops on the batch's device, no Python loop over samples. The same generator state gives
the same result. Random numbers are drawn in a fixed order (r, k, joint permutation keys, θ) for every sample,
whatever its branch.
"""
from __future__ import annotations

import math

import torch

from trgnet_fast.model.packing import PackedSequences
from trgnet_fast.skeletons import skeleton_layout

ROTATION_AXIS = {"PKU": "y", "LARA": "z", "TCG-15": "z", "BODY_25": None}

OCCLUDED, UNCHANGED, ROTATED = 0, 1, 2


def rotation_axis(dataset: str) -> str | None:
    """Axis SAEP rotates about for ``dataset`` ("x" | "y" | "z"), or None (MCFS: no rotation)."""
    return ROTATION_AXIS[skeleton_layout(dataset)]


def axis_rotation(theta: torch.Tensor, axis: str) -> torch.Tensor:
    """Rotation matrices about one coordinate axis: theta (N,) → (N, 3, 3) (right-handed, Rx/Ry/Rz)."""
    c, s = torch.cos(theta), torch.sin(theta)
    one, zero = torch.ones_like(theta), torch.zeros_like(theta)
    if axis == "x":
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == "y":
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    elif axis == "z":
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    else:
        raise ValueError(f"axis: expected 'x', 'y' or 'z', got {axis!r}")
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def saep(x: torch.Tensor, dataset: str, generator: torch.Generator | None = None, p_occlusion: float = 0.35,
         p_rotation: float = 0.35, return_info: bool = False, packed: PackedSequences | None = None):
    """SAEP on a batch x: (N, C, V, T) → new (N, C, V, T) tensor (x is not modified).

    dataset: selects V's occlusion range and the rotation axis. generator: a torch.Generator on x's device
    (None: the global RNG). Rotation needs C divisible by 3 (raises otherwise unless the dataset has no
    rotation axis). With return_info=True also returns dict(mode (N,) int64 in {OCCLUDED=0, UNCHANGED=1,
    ROTATED=2}, occluded (N, V) bool, theta (N,) angle actually applied (0 where not rotated)).
    packed: the sequences of a packed x (1, C, V, T) (docs/model.md#packed-batches): every draw is per sequence,
    the same draws as for the S videos of the padded batch with the same generator state (N = S in the info).
    """
    if x.ndim != 4:
        raise ValueError(f"saep: expected x of shape (N, C, V, T), got {tuple(x.shape)}")
    if not (0 <= p_occlusion and 0 <= p_rotation and p_occlusion + p_rotation <= 1):
        raise ValueError(f"saep: need p_occlusion, p_rotation ≥ 0 with sum ≤ 1, got {p_occlusion}, {p_rotation}")
    if packed is not None and (x.shape[0] != 1 or x.shape[3] != packed.total_frames):
        raise ValueError(f"saep: expected a packed x (1, C, V, {packed.total_frames}), got {tuple(x.shape)}")
    N, C, V, T = x.shape
    if packed is not None:
        N = packed.num_sequences
    axis = rotation_axis(dataset)
    dev = x.device
    kw = {"device": dev, "generator": generator}
    r = torch.rand(N, **kw)
    k = torch.randint(1, max(V // 2, 1) + 1, (N,), **kw)
    keys = torch.rand(N, V, **kw)
    theta = (torch.rand(N, **kw) * 2 - 1) * math.pi

    occlude = r < p_occlusion
    rotate = (r > 1 - p_rotation) & (axis is not None)
    # Joint j is occluded when its position in the sample's random permutation is < k.
    perm = keys.argsort(dim=1)
    chosen = torch.arange(V, device=dev)[None, :] < k[:, None]
    occluded = torch.zeros(N, V, dtype=torch.bool, device=dev).scatter(1, perm, chosen) & occlude[:, None]
    theta = torch.where(rotate, theta, torch.zeros_like(theta))
    if packed is None:
        out = x.masked_fill(occluded[:, None, :, None], 0)
    else:  # the per-sequence draws laid out per packed frame: (S, V) → (1, 1, V, T)
        out = x.masked_fill(occluded.index_select(0, packed.frame_sequence).t()[None, None], 0)

    if axis is not None:  # computed for the whole batch (no host sync), kept only where rotate is true
        if C % 3:
            raise ValueError(f"saep: rotation needs channels divisible by 3, got C={C}")
        R = axis_rotation(theta.to(torch.float64), axis).to(x.dtype)
        if packed is None:
            rotated = torch.einsum("nij,ngjvt->ngivt", R, x.reshape(N, C // 3, 3, V, T)).reshape(N, C, V, T)
            out = torch.where(rotate[:, None, None, None], rotated, out)
        else:
            R = R.index_select(0, packed.frame_sequence)  # (T, 3, 3)
            rotated = torch.einsum("tij,gjvt->givt", R, x[0].reshape(C // 3, 3, V, T)).reshape(1, C, V, T)
            out = torch.where(rotate.index_select(0, packed.frame_sequence)[None, None, None, :], rotated, out)
    if not return_info:
        return out
    mode = torch.full((N,), UNCHANGED, dtype=torch.int64, device=dev)
    mode[occlude] = OCCLUDED
    mode[rotate] = ROTATED
    return out, {"mode": mode, "occluded": occluded, "theta": theta}


def saep_batch(batch: dict, dataset: str, generator: torch.Generator | None = None, **kwargs) -> dict:
    """SAEP on a collated batch dict: returns a shallow copy with ``x`` augmented (see :func:`saep`)."""
    out = dict(batch)
    out["x"] = saep(batch["x"], dataset, generator=generator, **kwargs)
    return out
