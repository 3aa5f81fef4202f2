"""A tiny TRGNet with set graph scalars, and a PNG check, shared by the tests of text/viz.py and of the loading of
published checkpoints (tests/text, tests/training)."""
import os

import torch

from trgnet_fast.model.trgnet import TRGNet

KW = dict(in_channel=12, n_features=16, n_classes=5, n_stages=2, n_layers=3, n_refine_layers=2,
          n_stages_asb=2, n_stages_brb=2, SFI_layer=[1, 2], dataset="PKU-subject", text_dim=8)


def png_ok(path):
    assert os.path.isfile(path) and os.path.getsize(path) > 1000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def tiny_model(seed=0):
    """TRGNet(**KW) in eval mode with alpha = 0.7, beta = -1.3 (non-trivial adaptive graphs)."""
    torch.manual_seed(seed)
    m = TRGNet(**KW).eval()
    with torch.no_grad():
        m.SP.alpha.fill_(0.7)
        m.SP.beta.fill_(-1.3)
    return m
