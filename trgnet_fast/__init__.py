"""trgnet_fast: TRG-Net for skeleton-based temporal action segmentation, with fused kernels."""
__version__ = "0.1.0"

from trgnet_fast.model import TRGNet

__all__ = ["TRGNet"]
