"""Data: data-set loaders, the UAE-augmented dataset wrapper, batch transforms and the HDF5 cache."""

from .augmented import UAEAugmented
from .cache import CacheError, CacheLockedError, ProvenanceMismatchError, UAECache, precompute
from .datasets import (
    DATASETS,
    ENV_DATA_ROOT,
    ArrayDataset,
    DatasetFormatError,
    DatasetInfo,
    available_datasets,
    dataset_info,
    load_dataset,
    random_subset,
    resolve_data_root,
)
from .matched_noise import MatchedNoise
from .transforms import UAETransform, replacement_mask

__all__ = [
    "ArrayDataset",
    "CacheError",
    "CacheLockedError",
    "DATASETS",
    "DatasetFormatError",
    "DatasetInfo",
    "MatchedNoise",
    "ENV_DATA_ROOT",
    "ProvenanceMismatchError",
    "UAEAugmented",
    "UAECache",
    "UAETransform",
    "available_datasets",
    "dataset_info",
    "load_dataset",
    "precompute",
    "random_subset",
    "replacement_mask",
    "resolve_data_root",
]
