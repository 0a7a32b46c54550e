"""Datasets and partitioners: numpy arrays in, numpy arrays out, no I/O after loading."""

from velocity.data.datasets import (
    DATASETS,
    FederatedDataset,
    RawData,
    describe_datasets,
    load_dataset,
    stratified_split,
    synthetic_li2020,
)
from velocity.data.images import images_from_array, read_cifar10_binary, read_idx
from velocity.data.partition import PARTITIONERS, partition

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "FederatedDataset",
    "RawData",
    "describe_datasets",
    "images_from_array",
    "load_dataset",
    "partition",
    "read_cifar10_binary",
    "read_idx",
    "stratified_split",
    "synthetic_li2020",
]
