"""NoHostSync and the sync rule (trgnet_fast/host_sync.py)."""
import pytest
import torch

from trgnet_fast.host_sync import HostSyncError, NoHostSync, host_only, storage_key, sync_reason


@pytest.mark.parametrize("name,fn,op", [
    ("item", lambda x: x.sum().item(), "aten::_local_scalar_dense"),
    ("bool", lambda x: bool((x > 0).any()), "aten::_local_scalar_dense"),
    ("nonzero", lambda x: x.nonzero(), "aten::nonzero"),
    ("boolean mask", lambda x: x[x > 0], "aten::index"),
    ("equal", lambda x: torch.equal(x, x), "aten::equal"),
    ("repeat_interleave without output_size", lambda x: torch.repeat_interleave(torch.tensor([1, 2])),
     "aten::repeat_interleave"),
])
def test_syncing_ops_are_refused_naming_the_op(name, fn, op):
    with pytest.raises(HostSyncError, match=op):
        with NoHostSync():
            fn(torch.randn(6))


def test_sync_free_code_runs_and_returns_its_result():
    x = torch.randn(5)
    index = torch.tensor([0, 2])
    with NoHostSync():
        out = ((x * 2).sum(), x[index], torch.repeat_interleave(index, index + 1, output_size=4), x.max(),
               torch.where(x > 0, x, 0.0))
        torch._assert_async(torch.tensor(True))  # asynchronous on a GPU
    assert torch.equal(out[1], x[[0, 2]]) and out[2].tolist() == [0, 2, 2, 2]


def test_host_tensors_may_be_read():
    step, weight = torch.tensor(3.0), torch.randn(4)
    with NoHostSync(host_tensors=[step]):
        step.add_(1)
        assert step.item() == 4.0  # a host value
        weight.mul_(step)
        with pytest.raises(HostSyncError):
            weight.sum().item()
    assert host_only((step, torch.tensor(1.0)), {storage_key(step)})
    assert not host_only((step, weight), {storage_key(step)}) and not host_only((step,), set())


def test_sync_reason_of_an_integer_index_is_none():
    x = torch.randn(4)
    assert sync_reason(torch.ops.aten.index.Tensor, (x, [torch.tensor([1])]), {}) is None
    assert "boolean-mask" in sync_reason(torch.ops.aten.index.Tensor, (x, [x > 0]), {})
