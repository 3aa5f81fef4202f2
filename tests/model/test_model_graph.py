"""Skeleton layouts and the 13-scale adjacency, checked against an independent construction
(docs/model.md#skeleton-graphs)."""
from collections import deque

import pytest
import torch

from trgnet_fast.model import default_config
from trgnet_fast.model.graph import binary_adjacency, multiscale_adjacency
from trgnet_fast.model.spatial import MultiScaleGraphConv
from trgnet_fast.skeletons import DATASETS, num_joints

# Edge lists of the published graph code, written out independently of trgnet_fast.skeletons (MCFS 1-based,
# as published; docs/model.md#skeleton-graphs).
SPEC_EDGES = {
    "PKU-subject": [(12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (1, 0),
                    (20, 1), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (21, 7), (22, 6), (8, 20),
                    (9, 8), (10, 9), (11, 10), (24, 10), (23, 11)],
    "LARA": [(1, 0), (2, 1), (3, 2), (4, 3), (5, 0), (6, 5), (7, 6), (8, 7), (9, 0), (10, 9), (11, 9),
             (12, 10), (13, 12), (14, 13), (15, 9), (16, 15), (17, 16), (18, 17)],
    "MCFS-130": [(a - 1, b - 1) for a, b in [
        (2, 9), (1, 2), (16, 1), (18, 16), (17, 1), (19, 17), (6, 2), (7, 6), (8, 7), (3, 2), (4, 3),
        (5, 4), (10, 9), (11, 10), (12, 11), (25, 12), (23, 12), (24, 23), (13, 9), (14, 13), (15, 14),
        (22, 15), (20, 15), (21, 20)]],
    "TCG-15": [(1, 9), (9, 0), (0, 3), (3, 5), (5, 6), (0, 10), (10, 12), (12, 13), (0, 16), (16, 2),
               (2, 8), (8, 7), (7, 4), (2, 15), (15, 14), (14, 11)],
}
SPEC_JOINTS = {"PKU-subject": 25, "LARA": 19, "MCFS-130": 25, "TCG-15": 17}
SPEC_DIAMETER = {"PKU-subject": 11, "LARA": 9, "MCFS-130": 10, "TCG-15": 8}


def hop_distances(edges, v):
    """All-pairs hop counts by breadth-first search: (V, V) int tensor."""
    neighbours = [[] for _ in range(v)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    dist = torch.full((v, v), -1, dtype=torch.long)
    for source in range(v):
        dist[source, source] = 0
        queue = deque([source])
        while queue:
            node = queue.popleft()
            for nxt in neighbours[node]:
                if dist[source, nxt] < 0:
                    dist[source, nxt] = dist[source, node] + 1
                    queue.append(nxt)
    return dist


def expected_multiscale(edges, v, scales=13):
    """docs/model.md#skeleton-graphs built from hop distances: A_k = [dist == k] + I (A_0 = I), D^-1/2 A_k D^-1/2."""
    dist = hop_distances(edges, v)
    eye = torch.eye(v, dtype=torch.float64)
    blocks = []
    for k in range(scales):
        a_k = eye.clone() if k == 0 else (dist == k).double() + eye
        d = a_k.sum(1)
        blocks.append(a_k / torch.sqrt(d[:, None] * d[None, :]))
    return torch.cat(blocks)


@pytest.mark.parametrize("dataset", list(SPEC_EDGES))
def test_binary_adjacency_is_the_spec_skeleton(dataset):
    v = SPEC_JOINTS[dataset]
    expected = torch.zeros(v, v)
    for a, b in SPEC_EDGES[dataset]:
        expected[a, b] = expected[b, a] = 1
    assert num_joints(dataset) == v
    assert torch.equal(binary_adjacency(dataset), expected)
    dist = hop_distances(SPEC_EDGES[dataset], v)
    assert (dist >= 0).all(), "skeleton must be connected"
    assert len(SPEC_EDGES[dataset]) == v - 1, "skeleton must be a tree"
    assert int(dist.max()) == SPEC_DIAMETER[dataset]


@pytest.mark.parametrize("dataset", list(SPEC_EDGES))
def test_multiscale_adjacency_matches_hop_rings(dataset):
    v = SPEC_JOINTS[dataset]
    expected = expected_multiscale(SPEC_EDGES[dataset], v)
    sp = MultiScaleGraphConv(default_config(dataset)["in_channel"], 64, dataset)
    assert sp.A_powers.shape == (13 * v, v) and sp.A_powers.dtype == torch.float32
    # A_powers is float32: its entries (≤ 1) are the float64 ones rounded, an error ≤ 2^-24 ≈ 6e-8
    torch.testing.assert_close(sp.A_powers.double(), expected, rtol=0, atol=2.0 ** -24)
    torch.testing.assert_close(multiscale_adjacency(binary_adjacency(dataset)), sp.A_powers, rtol=0, atol=0)
    # Rings beyond the diameter are empty, so those scales reduce to the identity.
    for k in range(SPEC_DIAMETER[dataset] + 1, 13):
        assert torch.equal(sp.A_powers[k * v:(k + 1) * v], torch.eye(v))


def test_pku_multiscale_nonzero_count():
    assert int((multiscale_adjacency(binary_adjacency("PKU-subject")) != 0).sum()) == 925


def test_adjacency_is_not_state(make_model):
    model = make_model("LARA")
    keys = model.state_dict().keys()
    assert not any("A_powers" in k or "A_binary" in k for k in keys)
    assert "SP.A_res" in keys
    assert isinstance(model.SP.A_powers, torch.Tensor) and not isinstance(model.SP.A_powers, torch.nn.Parameter)
    assert model.SP.A_res.abs().max() <= 1e-6 and model.SP.A_res.abs().max() > 0


def test_dataset_names():
    assert set(DATASETS) == {"PKU-subject", "PKU-view", "LARA", "MCFS-130", "MCFS-22", "TCG-15"}
    assert [num_joints(d) for d in DATASETS] == [25, 25, 19, 25, 25, 17]
    assert torch.equal(binary_adjacency("PKU-view"), binary_adjacency("PKU-subject"))
    assert torch.equal(binary_adjacency("MCFS-22"), binary_adjacency("MCFS-130"))
    with pytest.raises(ValueError, match="dataset"):
        num_joints("NTU-60")


@pytest.mark.parametrize("dataset, in_channel, n_classes", [
    ("PKU-subject", 12, 52), ("PKU-view", 12, 52), ("LARA", 12, 8), ("MCFS-130", 2, 130), ("TCG-15", 6, 15)])
def test_default_config(dataset, in_channel, n_classes):
    config = default_config(dataset)
    assert config == {
        "in_channel": in_channel, "n_features": 64, "n_classes": n_classes, "n_stages": 4, "n_layers": 10,
        "n_refine_layers": 10, "n_stages_asb": 2, "n_stages_brb": 3, "SFI_layer": [1, 2, 3, 4, 5, 6, 7, 8, 9],
        "dataset": dataset,
    }
    config["SFI_layer"].append(0)
    assert default_config(dataset)["SFI_layer"] == list(range(1, 10))
