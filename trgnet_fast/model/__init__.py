"""Plain-PyTorch reference TRG-Net (docs/model.md#data-flow) with the published parameter names."""
from trgnet_fast.model.config import default_config
from trgnet_fast.model.graph import DATASETS, num_joints
from trgnet_fast.model.trgnet import TRGNet

__all__ = ["DATASETS", "TRGNet", "default_config", "num_joints"]
