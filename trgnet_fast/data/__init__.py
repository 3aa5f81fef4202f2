"""Data: feature construction, labels, datasets, batching (padded and packed), SAEP augmentation, converters,
synthetic data."""
from trgnet_fast.data.augment import axis_rotation, rotation_axis, saep, saep_batch
from trgnet_fast.data.collate import collate, segment_capacity
from trgnet_fast.data.datasets import CsvSegmentationDataset, MSTCNDataset, load_npy, read_bundle, unwrap_subsets
from trgnet_fast.data.features import (build_features, displacement, features_from_array, features_from_ctvm,
                                       root_relative)
from trgnet_fast.data.labels import (IGNORE_INDEX, boundary_from_labels, downsample, label_runs, read_ground_truth,
                                     read_mapping, temporal_rate, write_mapping)
from trgnet_fast.data.packing import FrameBudgetBatchSampler, batch_frames, frame_counts, pack_collate
from trgnet_fast.data.pku_convert import convert_pku_mmd
from trgnet_fast.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASSES
from trgnet_fast.data.synthetic import SYNTHETIC_DATASET, ensure_synthetic, generate_video, make_synthetic

__all__ = [
    "CsvSegmentationDataset", "FrameBudgetBatchSampler", "IGNORE_INDEX", "MSTCNDataset", "SYNTHETIC_CLASSES",
    "SYNTHETIC_DATASET", "axis_rotation", "batch_frames", "boundary_from_labels", "build_features", "collate",
    "convert_pku_mmd", "displacement", "downsample", "ensure_synthetic", "features_from_array", "features_from_ctvm",
    "frame_counts", "generate_video", "label_runs", "load_npy", "make_synthetic", "pack_collate", "read_bundle",
    "read_ground_truth", "read_mapping", "root_relative", "rotation_axis", "saep", "saep_batch", "segment_capacity",
    "temporal_rate", "unwrap_subsets", "write_mapping",
]
