"""Helpers shared by the property-based (hypothesis) op tests: where Triton is interpreted, how many examples
to draw, and the same values in other memory layouts."""
from __future__ import annotations

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"  # triton then runs in its CPU interpreter (tests/conftest.py)
NO_BF16 = "Triton's CPU interpreter cannot run bfloat16 (numpy has no bfloat16); it runs on a GPU"


def examples(backend: str, interpreted: int, compiled: int) -> int:
    """Hypothesis examples per run: few under the Triton CPU interpreter, more for compiled kernels."""
    return interpreted if backend == "triton" and INTERPRETED else compiled


def with_layout(t: torch.Tensor, layout: str, dims: tuple[int, int] | None = None) -> torch.Tensor:
    """``t``'s values in ``layout``: "contiguous"; "transposed": storage with dims ``dims`` swapped;
    "strided": the odd elements (storage offset 1, stride 2) of a buffer twice as long in the last dim (a 0-d
    tensor: the second element of a 2-element buffer), the gaps poisoned (NaN; for a bool tensor its
    negation) so that a kernel reading them shows up."""
    if layout == "contiguous":
        out = t.contiguous()
    elif layout == "transposed":
        out = t.transpose(*dims).contiguous().transpose(*dims)
        assert not out.is_contiguous() or min(t.shape[dims[0]], t.shape[dims[1]]) == 1
    elif layout == "strided":
        last = t.shape[-1] if t.dim() else 1
        src = t.reshape(*t.shape[:-1], last)
        buf = torch.empty(*src.shape[:-1], 2 * last, dtype=t.dtype, device=t.device)
        buf[..., 0::2] = ~src if t.dtype == torch.bool else float("nan")
        out = buf[..., 1::2]
        out.copy_(src)
        out = out.reshape(t.shape)  # a view (0-d: of the buffer's second element)
        assert out.storage_offset() == 1 and (not out.is_contiguous() or last == 1)
    else:
        raise ValueError(layout)
    assert torch.equal(out, t)
    return out
