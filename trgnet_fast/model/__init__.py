"""Plain-PyTorch reference TRG-Net (docs/model.md#data-flow) with the published parameter names."""
from trgnet_fast.model.config import default_config
from trgnet_fast.model.trgnet import TRGNet

__all__ = ["TRGNet", "default_config"]
