"""Datasets, splits and augmentation (L1: never imports models, methods or the engine).

Public API: `DataConfig`, `build_data`, `SegmentationData`, `Volume`, `DATASETS`, `inspect_dataset`;
submodules
`io` (read_scan, write_label_like), `transforms` (weak per-sample and batched strong augmentation), `phantom`.
"""

from __future__ import annotations

from arco.data import acdc, la, mni152, nnunet, preprocessed  # noqa: F401  (register the datasets)
from arco.data.build import DATASETS, SegmentationData, build_data
from arco.data.config import DataConfig
from arco.data.phantom import generate_phantom2d, generate_phantom3d
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
    "inspect_dataset",
    "detect_layout",
]
