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
from velocity.data.partition import PARTITIONERS, partition

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "FederatedDataset",
    "RawData",
    "describe_datasets",
    "load_dataset",
    "partition",
    "stratified_split",
    "synthetic_li2020",
]
