"""Graph construction, description files, and priors from precomputed embeddings (no encoder)."""
import os
import warnings

import numpy as np
import pytest
import torch

from trgnet_fast.skeletons import LAYOUT_EDGES, LAYOUT_JOINTS
from trgnet_fast.text import descriptions as D
from trgnet_fast.text.graphs import distance_graph, graph_stats, pairwise_l2
from trgnet_fast.text.priors import text_priors


def _check_graph(g):
    assert torch.equal(g, g.T)
    assert torch.all(torch.diagonal(g) == 1.0)
    assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0


def test_graph_properties():
    e = torch.randn(12, 32, generator=torch.Generator().manual_seed(0))
    g = distance_graph(e)
    assert g.dtype == torch.float32 and g.shape == (12, 12)
    _check_graph(g)
    d = pairwise_l2(e)
    i, j = np.unravel_index(int(torch.argmax(d)), d.shape)
    assert g[i, j] == 0.0 and float(g.min()) == 0.0
    ref = 1 - torch.cdist(e.double(), e.double()) / torch.cdist(e.double(), e.double()).max()
    torch.testing.assert_close(g.double(), ref, atol=1e-6, rtol=0)  # g is float32 (distances of float32 embeddings)
    # identical embeddings (as the published LARA "Neck" duplicate) give exactly 1
    e2 = torch.cat([e, e[:1]])
    assert distance_graph(e2)[0, 12] == 1.0
    assert torch.equal(distance_graph(torch.ones(3, 4)), torch.ones(3, 3))
    assert distance_graph(torch.randn(1, 5)).tolist() == [[1.0]]
    st = graph_stats(g)
    assert st["min"] == 0.0 and 0 < st["mean"] < st["max"] <= 1


def test_graph_permutation_equivariance():
    e = torch.randn(20, 16, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(2))
    g, gp = distance_graph(e), distance_graph(e[perm])
    # float32: permuting the rows changes the order of cdist's sums, so the last bit may differ
    torch.testing.assert_close(gp, g[perm][:, perm], atol=1e-7, rtol=0)


@pytest.mark.parametrize("layout", sorted(LAYOUT_JOINTS))
def test_joint_description_files(layout):
    lines = D.read_description_lines(D.joint_description_file(layout))
    assert len(lines) == LAYOUT_JOINTS[layout]
    with open(D.joint_description_file(layout), encoding="utf-8") as f:
        assert len(f.read().splitlines()) == LAYOUT_JOINTS[layout]  # no blank lines either
    names = [D.split_description(t)[0] for t in lines]
    assert all(":" in t and len(D.split_description(t)[1]) > 10 for t in lines)
    assert len(set(names)) == len(names)
    # every bone joins joints whose names share a body side (or one is central)
    for i, j in LAYOUT_EDGES[layout]:
        sides = {s for s in ("Left", "Right") for n in (names[i], names[j]) if n.startswith(s)}
        assert len(sides) <= 1, (layout, names[i], names[j])


def test_action_description_files():
    for dataset, k in (("PKU-subject", 52), ("PKU-view", 52), ("LARA", 8), ("TCG-15", 15)):
        path = D.builtin_action_file(dataset)
        with open(path, encoding="utf-8") as f:
            assert len(f.read().splitlines()) == k
        names, texts, info = D.action_texts(dataset)
        assert len(names) == len(texts) == k and not info["undescribed"]
    names, _, _ = D.action_texts("PKU-subject")
    assert names[0] == "NONE" and names[1] == "bow" and names[-1] == "writing"
    from trgnet_fast.data.synthetic import CLASS_NAMES
    names, texts, info = D.action_texts("synthetic")
    assert names == list(CLASS_NAMES) and info["matched"] == "name" and not info["undescribed"]
    with open(D.builtin_action_file("synthetic"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) == len(CLASS_NAMES)


def test_action_texts_mapping_and_fallback(tmp_path):
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("0 walk\n1 jump_high\n2 spin\n")
    desc = tmp_path / "desc.txt"
    desc.write_text("Jump High: leaving the ground with both feet.\nwalk: moving on foot.\n")
    with pytest.warns(UserWarning, match="spin"):
        names, texts, info = D.action_texts("MCFS-130", str(mapping), str(desc))
    assert names == ["walk", "jump_high", "spin"]
    assert texts == ["walk: moving on foot.", "Jump High: leaving the ground with both feet.", "spin"]
    assert info["matched"] == "name" and info["undescribed"] == ["spin"]
    # no name matches but the same number of lines: taken in order
    names, texts, info = D.action_texts("PKU-subject", [f"class_{i}" for i in range(52)])
    assert info["matched"] == "order" and texts[0].startswith("NONE:")
    with pytest.warns(UserWarning):
        names, texts, _ = D.action_texts("MCFS-130", ["a", "b"])
    assert texts == ["a", "b"]
    with pytest.raises(ValueError):
        D.action_texts("MCFS-130")


def _published_dir(tmp_path, dataset, v, k, d=24):
    rng = np.random.default_rng(0)
    np.save(tmp_path / f"{dataset}_joints_pool.npy", rng.normal(size=(v, d)).astype(np.float32))
    np.save(tmp_path / f"{dataset}_actions_pool.npy", rng.normal(size=(k, d)).astype(np.float32))
    return tmp_path


def test_text_priors_precomputed_and_modes(tmp_path, monkeypatch):
    import trgnet_fast.text.priors as P
    monkeypatch.setattr(P, "get_encoder", lambda *a, **k: pytest.fail("encoder must not be used"))
    d = _published_dir(tmp_path, "LARA", 19, 8)
    pri = text_priors("LARA", embeddings_dir=d, cache_dir=False)
    assert pri.text_dim == 24 and pri.joint_graph.shape == (19, 19) and pri.action_graph.shape == (8, 8)
    assert pri.action_embeddings.shape == (8, 24) and not pri.joint_graph_trainable
    _check_graph(pri.joint_graph)
    _check_graph(pri.action_graph)
    assert len(pri.joint_names) == 19 and pri.class_names[0] == "Standing"
    phys = text_priors("LARA", embeddings_dir=d, joint_graph="physical", cache_dir=False).joint_graph
    for i, j in LAYOUT_EDGES["LARA"]:
        assert phys[i, j] == 1 and phys[j, i] == 1
    assert float(phys.sum()) == 19 + 2 * 18
    assert torch.equal(text_priors("LARA", embeddings_dir=d, joint_graph="identity").joint_graph, torch.eye(19))
    learned = text_priors("LARA", embeddings_dir=d, joint_graph="learned", cache_dir=False)
    assert learned.joint_graph_trainable and torch.equal(learned.joint_graph, pri.joint_graph)
    np.save(tmp_path / "g.npy", np.eye(19, dtype=np.float32) * 0.5)
    assert float(text_priors("LARA", embeddings_dir=d, joint_graph=str(tmp_path / "g.npy")).joint_graph[0, 0]) == 0.5
    with pytest.raises(ValueError):
        text_priors("LARA", embeddings_dir=d, joint_graph="bogus")
    with pytest.raises(ValueError):
        text_priors("LARA", joint_embeddings=np.zeros((5, 24)), action_embeddings=np.zeros((8, 24)))
