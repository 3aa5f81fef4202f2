"""Training, evaluation and prediction drivers (``trgnet train | eval | predict``)."""
from trgnet_fast.training.checkpoint import atomic_save, atomic_write, load_checkpoint
from trgnet_fast.training.config import ConfigError, apply_overrides, load_config, validate
from trgnet_fast.training.trainer import Trainer, build_model, model_kwargs

__all__ = ["ConfigError", "Trainer", "apply_overrides", "atomic_save", "atomic_write", "build_model",
           "load_checkpoint", "load_config", "model_kwargs", "validate"]
