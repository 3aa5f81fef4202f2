"""Heatmaps, text-graphs writing (precomputed embeddings) and adaptive-graph extraction."""
import argparse

import numpy as np
import pytest
import torch

from tiny_model import png_ok, tiny_model
from trgnet_fast.text.commands import add_text_graphs_parser, text_graphs_command
from trgnet_fast.text.viz import extract_adaptive_graphs, plot_graph, segments_of


def _parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    add_text_graphs_parser(sub)
    return p


def test_plot_graph(tmp_path):
    g = torch.rand(25, 25)
    png_ok(plot_graph(g, [f"joint {i}" for i in range(25)], str(tmp_path / "g.png"), "title"))


def test_text_graphs_command_precomputed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "emb"
    src.mkdir()
    np.save(src / "PKU-subject_joints_pool.npy", rng.normal(size=(25, 16)).astype(np.float32))
    np.save(src / "PKU-subject_actions_pool.npy", rng.normal(size=(52, 16)).astype(np.float32))
    out = tmp_path / "out"
    args = _parser().parse_args(["text-graphs", "--dataset", "PKU-subject", "--embeddings-dir", str(src),
                                 "--out", str(out), "--no-cache"])
    assert args.func is text_graphs_command and args.func(args) == 0
    for name, shape in (("joints_pool", (25, 16)), ("actions_pool", (52, 16)), ("tjg", (25, 25)), ("tag", (52, 52))):
        assert np.load(out / f"PKU-subject_{name}.npy").shape == shape
    png_ok(str(out / "PKU-subject_tjg.png"))
    png_ok(str(out / "PKU-subject_tag.png"))
    assert "text_dim=16" in capsys.readouterr().out


@torch.no_grad()
def test_frame_graph_matches_independent_recompute():
    model = tiny_model()
    n, t, v = 2, 40, 25
    x = torch.randn(n, 12, v, t, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(n, 1, t)
    j = torch.rand(v, v)  # not symmetric: a graph shown transposed would differ
    captured = {}
    h1 = model.SP.mlp.register_forward_hook(lambda m, a, o: captured.__setitem__("x_m", o))
    h2 = model.SP.CTRGCN.register_forward_hook(lambda m, a, o: captured.__setitem__("y", o))
    try:
        res = extract_adaptive_graphs(model, x, mask, j)
    finally:
        h1.remove()
        h2.remove()
    x_m, ctrgc = captured["x_m"].detach().double(), model.SP.CTRGCN
    conv = lambda c, z: torch.einsum("oc,nctv->notv", c.weight[:, :, 0, 0].double(), z) + c.bias.double()[:, None, None]
    a, b, x3 = conv(ctrgc.conv1, x_m), conv(ctrgc.conv2, x_m), conv(ctrgc.conv3, x_m)
    p, q = a.mean(1), b.mean(1)
    beta, alpha = -1.3, 0.7
    fg = res["frame_graph"]
    assert fg.shape == (n, t, v, v) and res["channel_graph"].shape == (n, v, v)
    for (nn_, tt, u, w) in [(0, 0, 0, 0), (0, 5, 3, 17), (1, 39, 24, 2), (1, 20, 10, 10)]:
        want = beta * np.tanh(float(p[nn_, tt, u]) - float(q[nn_, tt, w])) + float(j[u, w])
        assert abs(float(fg[nn_, tt, u, w]) - want) < 1e-5
    ref_fg = beta * torch.tanh(p[..., :, None] - q[..., None, :]) + j.double()
    # the model runs in float32 (ref_* are float64 from the same float32 weights)
    torch.testing.assert_close(fg.double(), ref_fg, atol=1e-5, rtol=1e-5)
    rel = torch.tanh(a.mean(2)[..., :, None] - b.mean(2)[..., None, :])
    ref_gc = alpha * (torch.einsum("or,nruv->nouv", ctrgc.conv4.weight[:, :, 0, 0].double(), rel)
                      + ctrgc.conv4.bias.double()[:, None, None]) + j.double()
    torch.testing.assert_close(res["channel_graph"].double(), ref_gc.mean(1), atol=1e-5, rtol=1e-5)
    # the graphs reproduce the module's output
    y = torch.einsum("ntuv,nctv->nctu", ref_fg, x3) + torch.einsum("ncuv,nctv->nctu", ref_gc, x3)
    torch.testing.assert_close(captured["y"].double(), y, atol=1e-4, rtol=1e-4)
    assert res["alpha"] == pytest.approx(0.7) and res["beta"] == pytest.approx(-1.3)
    sub = extract_adaptive_graphs(model, x, mask, j, frames=[3, 7])["frame_graph"]
    torch.testing.assert_close(sub, fg[:, [3, 7]])
    assert model.training is False


def test_segments_of():
    assert segments_of([1, 1, 2, 2, 2, 0]) == [(1, 0, 2), (2, 2, 5), (0, 5, 6)]
    assert segments_of([]) == []
