"""The text-space feature heads (``conv_feature``, ``conv_asb_feature``: Conv1d(C → D), D = 768) as the training
step takes them: not applied (docs/model.md#deferred-text-heads). ARIS reads the encoder head e0 only through its
segment means, and the mean is linear, so the fused loss applies the head to the (M, C) segment means of its input
(``aris_losses`` with ``head_weight``, ``head_bias``) and e0 (N, D, T) is never formed; the decoder heads no loss
uses are not formed either."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class TextFeatures(NamedTuple):
    """A text-space feature head and its input: e = weight · hidden + bias per frame, not yet computed.

    hidden: (N, C, T) the head's input; weight: (D, C) the head's kernel (a view of the Conv1d's (D, C, 1)
    weight, so that its gradient reaches the parameter); bias: (D,)."""
    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def of(cls, head: nn.Conv1d, hidden: torch.Tensor) -> "TextFeatures":
        # a view whose backward is a view too (an index's would be a zero-filled copy: one op more per step)
        return cls(hidden, head.weight.view(head.out_channels, head.in_channels), head.bias)

    def materialize(self) -> torch.Tensor:
        """e (N, D, T) in hidden's dtype, as the head's Conv1d gives it (under autocast: in the autocast dtype)."""
        dtype = self.hidden.dtype
        return F.conv1d(self.hidden, self.weight.to(dtype)[..., None], self.bias.to(dtype))

    def map_hidden(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "TextFeatures":
        """The same head on fn(hidden) (a dtype cast, a layout change along T)."""
        return self._replace(hidden=fn(self.hidden))


def map_features(features, fn: Callable[[torch.Tensor], torch.Tensor]):
    """fn applied to a text feature tensor e (N, D, T), or to the input of a deferred head (``TextFeatures``)."""
    return features.map_hidden(fn) if isinstance(features, TextFeatures) else fn(features)
