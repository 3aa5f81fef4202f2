"""Helpers shared by the training tests (a uniquely named module: `conftest` is ambiguous on sys.path)."""
import numpy as np

TINY_MODEL = ["model.n_features=16", "model.n_layers=2", "model.n_refine_layers=2", "model.n_stages_asb=2",
              "model.n_stages_brb=2", "text.text_dim=16", "text.joint_graph=physical",
              "text.action_embeddings=null", "text.action_graph=null"]


def tiny_overrides(data_dir, out_dir, epochs=2, extra=()):
    return [f"data.dir={data_dir}", f"output_dir={out_dir}", f"train.epochs={epochs}", "train.batch_size=2",
            "data.val_every=4", "optim.lr=0.003", *TINY_MODEL, *extra]


def text_files(tmp_path, k=10, d=16):
    """Overrides pointing at random action embeddings (k, d) and a symmetric TAG (k, k) in ``tmp_path``: every ARIS
    term on."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", rng.normal(size=(k, d)).astype(np.float32))
    tag = rng.uniform(size=(k, k)).astype(np.float32)
    np.save(tmp_path / "tag.npy", (tag + tag.T) / 2)
    return [f"text.action_embeddings={tmp_path / 'emb.npy'}", f"text.action_graph={tmp_path / 'tag.npy'}"]
