"""Precision of the fp32 ``tl.dot`` calls in the Triton graph-conv kernels.

PyTorch's own switch decides, as for its matmuls: with ``torch.set_float32_matmul_precision("high")`` (or
``"medium"``, or ``torch.backends.cuda.matmul.allow_tf32 = True``) fp32 dots run on the TF32 tensor cores
(‖out − ref‖/‖ref‖ ≤ 1e-3 against float64, docs/architecture.md#parity); with the default ``"highest"``
they are IEEE fp32 FMAs (≤ 1e-5). fp16/bf16 dots always use the tensor cores, fp64 dots are IEEE. Read when a kernel is
launched (or traced by torch.compile), so changing the setting takes effect on the next call.
The linear-attention kernels stay IEEE: that op is bandwidth-bound, TF32 would cost precision for no speed.
"""
from __future__ import annotations

import torch


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot`` on operands of ``dtype``: "tf32" or "ieee"."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"
