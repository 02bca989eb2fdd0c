"""Data: data-set loaders, the UAE-augmented dataset wrapper, batch transforms and the HDF5 cache."""

from .datasets import (
    DATASETS,
    ENV_DATA_ROOT,
    ArrayDataset,
    DatasetFormatError,
    DatasetInfo,
    available_datasets,
    dataset_info,
    load_dataset,
    resolve_data_root,
)

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "DatasetFormatError",
    "DatasetInfo",
    "ENV_DATA_ROOT",
    "available_datasets",
    "dataset_info",
    "load_dataset",
    "resolve_data_root",
]
