"""A training batch to the device in one copy per dtype (docs/training.md#batch-transfer)."""
import torch
from torch.utils._pytree import tree_leaves
from torch.utils._python_dispatch import TorchDispatchMode

from trgnet_fast.data import collate
from trgnet_fast.losses import LossTargets, TRGNetLoss
from trgnet_fast.training.transfer import pack, to_device, unpack


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(5, 8, generator=gen)
    loss = TRGNetLoss(emb, torch.rand(5, 5, generator=gen), 4.0)
    items = [{"feature": torch.randn(3, 4, t, generator=gen), "label": torch.randint(0, 5, (t,), generator=gen),
              "boundary": torch.zeros(t), "name": f"v{t}"} for t in (7, 11, 3)]
    return collate(items, loss_targets=loss.target_builder())


class CopyCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.copy_):
            self.copies += 1
        return func(*args, **(kwargs or {}))


def back_storage(packed, tensor):
    """The storage pointer of the packed buffer of tensor's dtype."""
    return packed.buffers[tensor.dtype].untyped_storage().data_ptr()


def test_pack_and_unpack_give_back_every_tensor_and_leaf():
    batch = _batch()
    packed = pack(batch)
    assert set(packed.buffers) == {torch.float32, torch.int64, torch.bool}
    back = unpack(packed)
    assert isinstance(back["loss_targets"], LossTargets) and back["names"] == batch["names"]
    assert back["max_segments"] == batch["max_segments"]
    original, restored = tree_leaves(batch), tree_leaves(back)
    assert len(original) == len(restored) > 25
    for a, b in zip(original, restored):
        if torch.is_tensor(a):
            assert b.dtype == a.dtype and b.shape == a.shape and torch.equal(a, b)
            assert b.untyped_storage().data_ptr() == back_storage(packed, b)  # a view of its dtype's buffer
        else:
            assert a == b


def test_to_an_accelerator_one_copy_per_dtype():
    """Moved to another device (meta here: a CPU-only machine), the ~30 tensors of a batch cost 3 copies."""
    batch = _batch(1)
    with CopyCounter() as counter:
        moved = to_device(batch, "meta")
    assert counter.copies == 3
    for a, b in zip(tree_leaves(batch), tree_leaves(moved)):
        if torch.is_tensor(a):
            assert b.device.type == "meta" and b.shape == a.shape and b.dtype == a.dtype


def test_on_the_cpu_nothing_is_copied():
    batch = _batch(2)
    assert to_device(batch, "cpu") is batch
