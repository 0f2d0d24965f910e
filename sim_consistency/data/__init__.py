"""Datasets by name: CLIP_benchmark webdatasets, image folders, the built-in ``wds/digits``.

``load_dataset("wds/digits", "test", location=...)`` is the door the stages use; it returns a
map-style :class:`ImageDataset` (``keys``, ``labels``, ``classnames``, ``subset``) whose rows
are :class:`Sample` tuples. Subsets are seeded, class-stratified and saved per project.
"""

from __future__ import annotations

from sim_consistency.data.check import DatasetCheck, check_dataset
from sim_consistency.data.dataset import ImageDataset, Sample, collate_samples, decode_image
from sim_consistency.data.digits import DIGITS_CLASSNAMES, DIGITS_DATASET, build_digits
from sim_consistency.data.download import check_hub_reachable, download_webdataset, wds_repo_id
from sim_consistency.data.imagefolder import ImageFolderDataset
from sim_consistency.data.resolve import (
    DATASET_BUILDERS,
    DatasetName,
    dataset_dir,
    load_dataset,
    parse_dataset_name,
    read_dataset_list,
)
from sim_consistency.data.subsets import keys_fingerprint, load_or_create_subset, stratified_subset
from sim_consistency.data.wds import WdsDataset

__all__ = [
    "DATASET_BUILDERS",
    "DIGITS_CLASSNAMES",
    "DIGITS_DATASET",
    "DatasetCheck",
    "DatasetName",
    "ImageDataset",
    "ImageFolderDataset",
    "Sample",
    "WdsDataset",
    "build_digits",
    "check_dataset",
    "check_hub_reachable",
    "collate_samples",
    "dataset_dir",
    "decode_image",
    "download_webdataset",
    "keys_fingerprint",
    "load_dataset",
    "load_or_create_subset",
    "parse_dataset_name",
    "read_dataset_list",
    "stratified_subset",
    "wds_repo_id",
]
