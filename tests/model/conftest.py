"""Shared inputs for the TRG-Net model tests."""
import pytest
import torch

from trgnet_fast.model import TRGNet, default_config
from trgnet_fast.skeletons import num_joints


def text_joint_graph(v: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """A TJG-like (V, V) matrix: 1 - D / max D over random 768-d embeddings (diag 1, values in [0, 1])."""
    embeddings = torch.randn(v, 768, generator=generator, dtype=torch.float64)
    distances = torch.cdist(embeddings, embeddings)
    return (1 - distances / distances.max()).to(dtype)


def model_inputs(dataset: str, lengths=(24, 24), seed: int = 0, dtype=torch.float32):
    """x (N, C_in, V, T), mask (N, 1, T) bool with the given valid lengths (T = max), joint_graph (V, V).

    Features are zero on padded frames, as the published collate function pads them.
    """
    generator = torch.Generator().manual_seed(seed)
    c, v, t = default_config(dataset)["in_channel"], num_joints(dataset), max(lengths)
    x = torch.randn(len(lengths), c, v, t, generator=generator, dtype=dtype)
    mask = torch.zeros(len(lengths), 1, t, dtype=torch.bool)
    for i, length in enumerate(lengths):
        mask[i, :, :length] = True
    return x * mask[:, :, None, :], mask, text_joint_graph(v, generator, dtype)


def build_model(dataset: str, seed: int = 0, **overrides) -> TRGNet:
    torch.manual_seed(seed)
    return TRGNet(**{**default_config(dataset), **overrides})


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The model tests use tiny tensors: one intra-op thread is far faster than OpenMP threads
    contending for the CI machine's 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pku_model() -> TRGNet:
    """A PKU-subject TRGNet in eval mode (tests must not modify it)."""
    return build_model("PKU-subject").eval()


@pytest.fixture
def make_inputs():
    """The ``model_inputs`` factory."""
    return model_inputs


@pytest.fixture
def make_model():
    """The ``build_model`` factory."""
    return build_model


@pytest.fixture
def make_joint_graph():
    """The ``text_joint_graph`` factory."""
    return text_joint_graph


def saved_storage_bytes(run, exclude: torch.Tensor | None = None) -> int:
    """Bytes of the distinct storages autograd saves for the backward of ``run()``, without ``exclude``'s storage."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    if exclude is not None:
        storages.pop(exclude.untyped_storage().data_ptr(), None)
    return sum(storages.values())


@pytest.fixture
def saved_bytes():
    """The ``saved_storage_bytes`` counter."""
    return saved_storage_bytes
