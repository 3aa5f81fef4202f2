"""Offline encoder: no network, pooling, cache, a 768-d BERT, permutation equivariance through the encoder."""
import os
import shutil
import socket

import numpy as np
import pytest
import torch

from trgnet_fast.text import descriptions as D
from trgnet_fast.text.encoder import (OfflineError, TextEncoder, default_encoder_path, no_network,
                                      resolve_encoder_path)
from trgnet_fast.text.priors import embed_texts, text_priors

SENTENCES = ["Left Knee: the hinge in the middle of the left leg.", "Head.",
             "Right Thumb: the thumb of the right hand, which opposes the fingers to pinch and grip objects."]


def test_offline_load(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert minilm.path == os.path.abspath(default_encoder_path())
    assert minilm.dim == 384 and minilm.identity["model_type"] == "bert"
    # a fresh load runs entirely under the guard in which any network/hub access raises
    enc = TextEncoder(minilm.path)
    enc.load()
    assert enc._model is not None
    with no_network():
        import huggingface_hub
        with pytest.raises(OfflineError):
            huggingface_hub.hf_hub_download("bert-base-uncased", "config.json")
        with pytest.raises(OfflineError):
            socket.create_connection(("huggingface.co", 443), timeout=1)
    assert huggingface_hub.hf_hub_download is not None and socket.socket.connect.__name__ != "_refuse"
    # hub ids / missing folders are refused before transformers is called
    with pytest.raises(FileNotFoundError, match="hub downloads are disabled"):
        resolve_encoder_path("bert-base-uncased")


def test_mean_pooling_ignores_padding(minilm):
    batch = minilm.encode(SENTENCES, "mean")
    single = torch.cat([minilm.encode([s], "mean") for s in SENTENCES])
    assert batch.shape == (3, 384)
    # float32 encoder: padded batches run other matmul shapes (other summation orders) than single sentences
    torch.testing.assert_close(batch, single, atol=2e-5, rtol=1e-4)
    cls = minilm.encode(SENTENCES, "cls")
    pooler = minilm.encode(SENTENCES, "pooler")
    assert cls.shape == pooler.shape == (3, 384)
    assert float(pooler.abs().max()) <= 1.0  # tanh head
    assert not torch.allclose(cls, batch)
    with pytest.raises(ValueError):
        minilm.encode(SENTENCES, "max")


def test_cache_hit_and_miss(minilm, tmp_path):
    calls = minilm.calls
    e1, g1, i1 = embed_texts(SENTENCES, minilm, "mean", tmp_path)
    assert not i1["cache_hit"] and minilm.calls == calls + 1 and os.path.isfile(i1["cache_file"])
    e2, g2, i2 = embed_texts(SENTENCES, minilm, "mean", tmp_path)
    assert i2["cache_hit"] and minilm.calls == calls + 1
    assert torch.equal(e1, e2) and torch.equal(g1, g2)
    # a fresh (unloaded) encoder of the same folder hits the cache without loading the model
    fresh = TextEncoder(minilm.path)
    _, _, i3 = embed_texts(SENTENCES, fresh, "mean", tmp_path)
    assert i3["cache_hit"] and fresh._model is None and fresh.calls == 0
    # other pooling / other texts: misses
    _, _, i4 = embed_texts(SENTENCES, minilm, "cls", tmp_path)
    _, _, i5 = embed_texts(SENTENCES[:2], minilm, "mean", tmp_path)
    assert not i4["cache_hit"] and not i5["cache_hit"] and minilm.calls == calls + 3
    assert len({i1["cache_file"], i4["cache_file"], i5["cache_file"]}) == 3


def test_text_priors_encoder_and_permutation(minilm, tmp_path):
    pri = text_priors("LARA", encoder=minilm, cache_dir=tmp_path)
    assert pri.text_dim == 384 and pri.action_embeddings.shape == (8, 384) and pri.joint_graph.shape == (19, 19)
    for g in (pri.joint_graph, pri.action_graph):
        assert torch.equal(g, g.T) and torch.all(torch.diagonal(g) == 1) and float(g.min()) == 0.0
    texts = D.joint_texts("PKU")
    perm = np.random.default_rng(0).permutation(len(texts))
    _, g, _ = embed_texts(texts, minilm, "mean", False)
    _, gp, _ = embed_texts([texts[i] for i in perm], minilm, "mean", False)
    # float32 encoder: permuted sentences are padded and batched differently (see the pooling test above)
    torch.testing.assert_close(gp, g[perm][:, perm], atol=1e-4, rtol=0)


def test_bert_768(minilm, tmp_path):
    from transformers import BertConfig, BertModel
    folder = tmp_path / "bert768"
    torch.manual_seed(0)
    # BERT-base width (768); 2 layers instead of 12 to keep the test fast, the shape path is the same
    BertModel(BertConfig(num_hidden_layers=2)).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = os.path.join(minilm.path, name)
        if os.path.isfile(src):
            shutil.copy(src, folder / name)
    enc = TextEncoder(folder)
    assert enc.dim == 768
    pri = text_priors("synthetic", encoder=enc, cache_dir=tmp_path / "cache")
    assert pri.text_dim == 768 and pri.joint_embeddings.shape == (25, 768)
    assert pri.action_embeddings.shape == (10, 768) and pri.action_graph.shape == (10, 10)
    for pooling in ("cls", "pooler"):
        assert enc.encode(SENTENCES, pooling).shape == (3, 768)
