"""Training steps (and evaluation forwards, ``training.evaluate.graphed_forward``) replayed as CUDA graphs
(docs/training.md#cuda-graphs).

The whole step — forward, losses, backward, gradient clipping, Adam — is captured once per batch layout (the padded
length bucket and the ARIS segment bound fix every shape) and replayed for every later batch of that layout, after a
copy of the batch into the graph's static input buffers. What makes the step capturable is arranged elsewhere: it
reads nothing back from the device (docs/training.md#no-host-syncs), the collate pads to a few lengths
(``data.collate.bucket_length``), gradients are zeroed in place (their addresses stay), the optimizer keeps its step
counts on the device (``Adam(fused=True, capturable=True)``), and the dropout seeds are one device draw per step.
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Callable, NamedTuple

import torch

from trgnet_fast.backend import model_backend
from trgnet_fast.ops.att_module.autograd import OP_NAME as ATT_MODULE_OP
from trgnet_fast.training.config import ConfigError
from trgnet_fast.training.transfer import copy_buffers, device_buffers, layout_key, pack, unpack


def check_graphable(what: str, device, backend: str | None, processes: int = 1, *,
                    unvalidated_mask_mode: str | None = None) -> None:
    """Raise ConfigError naming ``what`` (e.g. "config key 'train.cuda_graphs'", "--cuda-graphs") unless a model of
    ``backend`` can run as CUDA graphs on ``device`` in ``processes`` processes: a CUDA device, one process (DDP's
    gradient hooks are host logic per step; pass 1 for inference) and fused layers as ``backend`` resolves on
    ``device`` (the AttModules' torch reference reads each video's length on the host; "auto" or $TRGNET_BACKEND may
    resolve to it).

    These are what the config cannot know before the device is chosen; the config relations of the graphs options
    (model.mask_mode correct, no explicit torch backend, padded batches) are config validation's
    (``training.config._check_relations``). ``unvalidated_mask_mode`` is the model's mask mode where graphs are
    turned on for a config that validation did not check with them on: `trgnet eval/predict --cuda-graphs` on a
    checkpoint (trained without eval.cuda_graphs, or written before the relation existed); it must be correct, as
    padding to length buckets would change published mode's statistics."""
    device = torch.device(device)
    if device.type != "cuda" or processes != 1:
        raise ConfigError(f"{what}: expected one process on a CUDA device, got device {device} and "
                          f"{processes} process(es)")
    if unvalidated_mask_mode is not None and unvalidated_mask_mode != "correct":
        raise ConfigError(f"{what}: expected model.mask_mode: correct (batches are padded to length "
                          f"buckets), got {unvalidated_mask_mode!r}")
    if model_backend(ATT_MODULE_OP, backend, device) == "torch":
        raise ConfigError(f"{what}: expected a fused model.backend (cuda or triton; auto where one is "
                          f"usable): the AttModules' torch reference reads each video's length on the host, got "
                          f"model.backend {backend!r} running them in torch")


class _Captured(NamedTuple):
    graph: torch.cuda.CUDAGraph
    buffers: dict  # dtype → static input buffer on the device
    result: torch.Tensor  # the step's static output


class GraphedSteps:
    """Run ``step`` (a function of a pytree of device tensors, e.g. a training batch, returning one tensor) as CUDA
    graphs: for each new batch layout (``transfer.layout_key``: dtypes, shapes, other leaves) the first ``warmup``
    batches run eagerly (real steps; they compile kernels and create the optimizer's state outside the capture), the
    next is captured and every later one replays the capture.

    ``step`` must be capturable: no host reads of device values, no new parameters or optimizer states after its
    warmup, gradients zeroed in place, and the same Python control flow for every batch of one layout.
    Calling returns the step's result for the batch (a copy, so that it survives the next replay).
    """

    def __init__(self, step: Callable[[object], torch.Tensor], device, warmup: int = 2):
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"device: CUDA graphs need a CUDA device, got {device}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup: expected an int ≥ 1 (eager steps per layout before its capture), got "
                             f"{warmup!r}")
        self.step, self.device, self.warmup = step, device, warmup
        self.pool = torch.cuda.graph_pool_handle()  # one memory pool for every layout's graph
        self.graphs: dict = {}
        self.eager_steps: Counter = Counter()

    @property
    def layouts(self) -> int:
        """The number of layouts captured so far."""
        return len(self.graphs)

    def __call__(self, tree) -> torch.Tensor:
        packed = pack(tree)
        key = layout_key(packed)
        captured = self.graphs.get(key)
        if captured is None:
            if self.eager_steps[key] < self.warmup:
                self.eager_steps[key] += 1
                with warnings.catch_warnings():  # a capturable optimizer's warmup steps are meant to run uncaptured
                    warnings.filterwarnings("ignore", message=".*capturable=True.*without .* graph capture")
                    return self.step(unpack(packed, device_buffers(packed, self.device)))
            captured = self.graphs[key] = self._capture(packed)
        copy_buffers(captured.buffers, packed)
        captured.graph.replay()
        return captured.result.clone()

    def _capture(self, packed) -> _Captured:
        """Capture ``step`` on static buffers shaped like ``packed``'s; nothing runs (the caller replays)."""
        buffers = {dtype: torch.empty_like(buffer, device=self.device) for dtype, buffer in packed.buffers.items()}
        tree = unpack(packed, buffers)
        torch.cuda.synchronize(self.device)  # the eager steps' work done before the capture starts
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                result = self.step(tree)
        except Exception as exc:
            shapes = ", ".join(f"{tuple(shape)} {str(dtype).replace('torch.', '')}"
                               for _, dtype, _, shape in packed.layout)
            raise RuntimeError(f"CUDA graphs: capturing the step for a batch of tensors {shapes} failed: {exc} "
                               "(run without cuda_graphs; docs/training.md#cuda-graphs)") from exc
        return _Captured(graph, buffers, result)
