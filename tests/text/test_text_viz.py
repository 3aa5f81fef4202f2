"""Heatmaps, text-graphs writing (precomputed embeddings), adaptive-graph extraction and viz-graphs."""
import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trgnet_fast.model.trgnet import TRGNet
from trgnet_fast.text.commands import (add_text_graphs_parser, add_viz_graphs_parser, infer_model_kwargs,
                                       load_model_any, text_graphs_command, viz_graphs_command)
from trgnet_fast.text.viz import extract_adaptive_graphs, plot_graph, segments_of

KW = dict(in_channel=12, n_features=16, n_classes=5, n_stages=2, n_layers=3, n_refine_layers=2,
          n_stages_asb=2, n_stages_brb=2, SFI_layer=[1, 2], dataset="PKU-subject", text_dim=8)


def _png_ok(path):
    assert os.path.isfile(path) and os.path.getsize(path) > 1000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _model(seed=0):
    torch.manual_seed(seed)
    m = TRGNet(**KW).eval()
    with torch.no_grad():
        m.SP.alpha.fill_(0.7)
        m.SP.beta.fill_(-1.3)
    return m


def _parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    add_text_graphs_parser(sub)
    add_viz_graphs_parser(sub)
    return p


def test_plot_graph(tmp_path):
    g = torch.rand(25, 25)
    _png_ok(plot_graph(g, [f"joint {i}" for i in range(25)], str(tmp_path / "g.png"), "title"))


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
    _png_ok(str(out / "PKU-subject_tjg.png"))
    _png_ok(str(out / "PKU-subject_tag.png"))
    assert "text_dim=16" in capsys.readouterr().out


@torch.no_grad()
def test_frame_graph_matches_independent_recompute():
    model = _model()
    n, t, v = 2, 40, 25
    x = torch.randn(n, 12, v, t, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(n, 1, t)
    j = torch.rand(v, v)
    j = (j + j.T) / 2
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


def test_infer_model_kwargs():
    sd = TRGNet(**KW).state_dict()
    kw = infer_model_kwargs(sd)
    assert {k: kw[k] for k in KW} == KW


@pytest.mark.parametrize("fmt", ["trainer", "config", "bare"])
def test_load_model_any(tmp_path, fmt):
    model = _model()
    sd = model.state_dict()
    obj = {"trainer": {"model": sd, "model_kwargs": KW},
           "config": {"model": {"module." + k: v for k, v in sd.items()},
                      "config": {"dataset": "PKU-subject", "model": {"n_classes": 5}}},
           "bare": sd}[fmt]
    torch.save(obj, tmp_path / "ck.pt")
    loaded, info = load_model_any(str(tmp_path / "ck.pt"))
    assert {k: info["model_kwargs"][k] for k in KW} == KW
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v)


@pytest.mark.parametrize("fmt", ["trainer", "bare"])
def test_viz_graphs_command(tmp_path, fmt, capsys):
    model = _model()
    t = 60
    feat = np.random.default_rng(0).normal(size=(12, 25, t)).astype(np.float32)
    labels = np.repeat([0, 3, 1], [20, 25, 15])
    np.save(tmp_path / "vid.npy", feat)
    np.save(tmp_path / "lab.npy", labels)
    sd = model.state_dict()
    obj = {"trainer": {"model": sd, "model_kwargs": KW, "class_names": list("abcde"), "joint_graph": torch.eye(25)},
           "bare": sd}[fmt]
    torch.save(obj, tmp_path / "ck.pt")
    out = tmp_path / "viz"
    argv = ["viz-graphs", "--checkpoint", str(tmp_path / "ck.pt"), "--video", str(tmp_path / "vid.npy"),
            "--labels", str(tmp_path / "lab.npy"), "--out", str(out), "--frames", "0,59"]
    if fmt != "trainer":
        argv += ["--joint-graph", "physical", "--residual"]
    args = _parser().parse_args(argv)
    assert args.func is viz_graphs_command and args.func(args) == 0
    for name in ("vid_frame_graphs.png", "vid_channel_graph.png", "vid_joint_graph.png", "vid_frame0.png",
                 "vid_frame59.png"):
        _png_ok(str(out / name))
    z = np.load(out / "vid_graphs.npz")
    assert z["frame_graph"].shape == (t, 25, 25) and z["channel_graph"].shape == (25, 25)
    assert np.array_equal(z["labels"], labels)
    # reproduces the extraction on the same model
    jg = torch.eye(25) if fmt == "trainer" else torch.as_tensor(z["joint_graph"])
    res = extract_adaptive_graphs(model, torch.as_tensor(feat)[None], torch.ones(1, 1, t), jg)
    np.testing.assert_allclose(z["frame_graph"], res["frame_graph"][0].numpy(), atol=1e-5)
