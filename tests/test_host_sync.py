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


def test_copies_between_the_host_and_a_device_are_refused():
    """On the meta device (a stand-in for a GPU on a CPU-only machine) a tensor made on the host and copied over, and a
    copy back, are refused; copies within one device and host scalars in an op are not copies between the two."""
    x = torch.ones(3, device="meta")
    for copy in (lambda: x + torch.arange(3).to(x.device), lambda: x.copy_(torch.ones(3))):
        with pytest.raises(HostSyncError, match="host-to-device copy"):
            with NoHostSync():
                copy()
    with pytest.raises(HostSyncError, match="device-to-host copy"):
        with NoHostSync():
            x.cpu()
    with NoHostSync():
        y = x.to(torch.float64).clone().copy_(x) * torch.tensor(2.0)
        z = torch.ones(2).to(torch.float64)
    assert y.device.type == "meta" and y.dtype == torch.float64 and z.tolist() == [1.0, 1.0]
