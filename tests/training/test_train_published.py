"""Loading checkpoints of any accepted format (trainer, {'model', 'config'} dict, bare published state_dict)
and the viz-graphs command on them."""
import numpy as np
import pytest
import torch

from tiny_model import KW, png_ok, tiny_model
from trgnet_fast import cli
from trgnet_fast.model.trgnet import TRGNet
from trgnet_fast.text.viz import extract_adaptive_graphs
from trgnet_fast.training.published import infer_model_kwargs, load_model_any, strip_module_prefix


def test_infer_model_kwargs():
    sd = TRGNet(**KW).state_dict()
    kw = infer_model_kwargs(sd)
    assert {k: kw[k] for k in KW} == KW


def test_strip_module_prefix():
    sd = {"module.conv_cls.weight": torch.zeros(1), "conv_cls.bias": torch.zeros(1)}
    assert list(strip_module_prefix(sd)) == ["conv_cls.weight", "conv_cls.bias"]


@pytest.mark.parametrize("fmt", ["trainer", "config", "bare"])
def test_load_model_any(tmp_path, fmt):
    model = tiny_model()
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
    model = tiny_model()
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
    assert cli.main(argv) == 0
    for name in ("vid_frame_graphs.png", "vid_channel_graph.png", "vid_joint_graph.png", "vid_frame0.png",
                 "vid_frame59.png"):
        png_ok(str(out / name))
    z = np.load(out / "vid_graphs.npz")
    assert z["frame_graph"].shape == (t, 25, 25) and z["channel_graph"].shape == (25, 25)
    assert np.array_equal(z["labels"], labels)
    # reproduces the extraction on the same model
    jg = torch.eye(25) if fmt == "trainer" else torch.as_tensor(z["joint_graph"])
    res = extract_adaptive_graphs(model, torch.as_tensor(feat)[None], torch.ones(1, 1, t), jg)
    np.testing.assert_allclose(z["frame_graph"], res["frame_graph"][0].numpy(), atol=1e-5)
