"""Datasets, splits and augmentation (L1: never imports models, methods or the engine).

Public API: `DataConfig`, `build_data`, `SegmentationData`, `Volume`, `DATASETS`, `inspect_dataset`; submodules
`io` (read_scan, write_label_like), `formats` (NIfTI/NRRD/MHA/DICOM files and their geometry), `cases` (inputs
-> cases, channel files grouped), `convert` (official downloads -> training layouts), `transforms` (weak
per-sample and batched strong augmentation), `phantom`, `phantom_mp`.
"""

from __future__ import annotations

from arco.data import acdc, la, mni152, nnunet, preprocessed  # noqa: F401  (register the datasets)
from arco.data.build import DATASETS, SegmentationData, build_data
from arco.data.config import DataConfig
from arco.data.phantom import generate_phantom2d, generate_phantom3d
from arco.data.phantom_mp import generate_phantom_mp
from arco.data.summary import detect_layout, inspect_dataset
from arco.data.volume import Volume

__all__ = [
    "DataConfig",
    "build_data",
    "SegmentationData",
    "Volume",
    "DATASETS",
    "generate_phantom2d",
    "generate_phantom3d",
    "generate_phantom_mp",
    "inspect_dataset",
    "detect_layout",
]
