"""`SegmentationData`, the `DATASETS` registry and `build_data` (shared assembly used by every loader)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from arco._checks import ConfigError, DataError, choice
from arco.data.config import DataConfig
from arco.data.datasets import PatchDataset, SliceDataset, slice_positions
from arco.data.volume import NORMALIZATIONS, Volume
from arco.registry import Registry

__all__ = ["SegmentationData", "DATASETS", "build_data", "assemble"]

DATASETS: Registry[SegmentationData] = Registry("dataset")
logger = logging.getLogger(__name__)


@dataclass
class SegmentationData:
    """Everything a run needs from a dataset.

    Attributes:
        name: registry name; spatial_dims: 2 or 3; num_classes: including background; class_names: one per
            class.
        patch_size: network input size ((H, W) or (D, H, W)).
        normalization: the intensity normalisation applied (one scheme, or a comma list with one per channel).
        labeled: Dataset of ``{"image": (C, *patch) float32, "label": (*patch) int64}``.
        unlabeled: Dataset of ``{"image": (C, *patch) float32}`` (may be empty when everything is labeled).
        val, test: whole cases (`Volume`, label present) for model selection and the final report.
        split: JSON-serialisable case ids per part and the rule used (written to every run folder).
        in_channels: image channels C (the network's ``in_channels``).
        channel_names: one name per channel (``dataset.json`` ``channel_names``; ``("image",)`` for
            single-channel layouts without names).
        channel_normalization: the scheme applied to each channel.
    """

    name: str
    spatial_dims: int
    num_classes: int
    class_names: tuple[str, ...]
    patch_size: tuple[int, ...]
    normalization: str
    labeled: Dataset
    unlabeled: Dataset
    val: list[Volume]
    test: list[Volume]
    split: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    channel_names: tuple[str, ...] = ("image",)
    channel_normalization: tuple[str, ...] = ()


def build_data(cfg: DataConfig) -> SegmentationData:
    """Build the dataset named by ``cfg.dataset`` (see `DataConfig`).

    Raises:
        ValueError: unknown dataset name (lists the known ones).
        ConfigError: bad config values; DataError: missing/corrupt/inconsistent files, bad label split.
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"build_data() expects a DataConfig, got {type(cfg).__name__}")
    for part in str(cfg.normalization).split(","):
        if part.strip() not in ("", *NORMALIZATIONS):
            choice("data.normalization", part.strip(), NORMALIZATIONS)
    if cfg.spatial_dims not in (0, 2, 3):
        raise ConfigError(f"data.spatial_dims must be 0 (dataset default), 2 or 3, got {cfg.spatial_dims}")
    if cfg.num_classes < 0:
        raise ConfigError(f"data.num_classes must be >= 0 (0 = from the dataset), got {cfg.num_classes}")
    return DATASETS.build(cfg.dataset, cfg=cfg)


def check_dims(name: str, dataset_dims: int | tuple[int, ...], cfg: DataConfig) -> int:
    """Resolve spatial_dims: ``dataset_dims`` is the only one allowed (int) or the allowed ones (default
    first)."""
    allowed = (dataset_dims,) if isinstance(dataset_dims, int) else tuple(dataset_dims)
    if cfg.spatial_dims and cfg.spatial_dims not in allowed:
        raise DataError(
            f"dataset '{name}' at {cfg.root or '(built in)'} is {allowed[0]}D but data.spatial_dims="
            f"{cfg.spatial_dims}; set data.spatial_dims to {' or '.join(map(str, allowed))}"
        )
    return cfg.spatial_dims or allowed[0]


def resolve_patch(cfg: DataConfig, spatial_dims: int, default: tuple[int, ...]) -> tuple[int, ...]:
    patch = tuple(int(p) for p in (cfg.patch_size or default))
    if len(patch) != spatial_dims or min(patch) < 1:
        raise ConfigError(
            f"data.patch_size must have {spatial_dims} positive entries for a {spatial_dims}D dataset "
            f"({'(H, W)' if spatial_dims == 2 else '(D, H, W)'}), got {tuple(cfg.patch_size)}"
        )
    return patch


def check_classes(name: str, class_names: tuple[str, ...], cfg: DataConfig) -> int:
    n = len(class_names)
    if cfg.num_classes and cfg.num_classes != n:
        raise ConfigError(
            f"data.num_classes={cfg.num_classes} but dataset '{name}' has {n} classes {list(class_names)}; "
            "set data.num_classes to 0 (take it from the dataset) or to the right count"
        )
    return n


def assemble(
    cfg: DataConfig,
    name: str,
    spatial_dims: int,
    class_names: tuple[str, ...],
    normalization: str,
    patch_size: tuple[int, ...],
    labeled: tuple[list[np.ndarray], list[np.ndarray], list[str]],
    unlabeled: tuple[list[np.ndarray], list[str]],
    val: list[Volume],
    test: list[Volume],
    split: dict[str, Any],
    repeats: int = 1,
    channel_names: tuple[str, ...] = ("image",),
    channel_normalization: tuple[str, ...] = (),
) -> SegmentationData:
    """Wrap arrays into the torch datasets; checks that the labeled set is not empty.

    ``normalization`` is one scheme for every channel (``channel_normalization`` empty) or the comma-joined
    ``channel_normalization``; training items are ``(H, W)`` / ``(D, H, W)`` arrays, with a leading channel
    axis when ``len(channel_names) > 1``.
    """
    images, labels, ids = labeled
    if not images:
        raise DataError(
            f"dataset '{name}' at {cfg.root or '(built in)'}: the labeled set is empty "
            f"(data.labeled={cfg.labeled!r}, rule {cfg.split_rule!r}); label at least one case"
        )
    if spatial_dims == 2:
        pos = slice_positions([*ids, *unlabeled[1]])  # both parts: a row split may cut a volume
        pos_l, pos_u = (None, None) if pos is None else (pos[: len(ids)], pos[len(ids) :])
        lab = SliceDataset(images, labels, ids, patch_size, cfg.augment, cfg.rotation, cfg.max_zoom, pos_l)
        unl = SliceDataset(unlabeled[0], None, unlabeled[1], patch_size, cfg.augment, cfg.rotation, cfg.max_zoom, pos_u)
    else:
        lab = PatchDataset(images, labels, ids, patch_size, cfg.augment, repeats)
        unl = PatchDataset(unlabeled[0], None, unlabeled[1], patch_size, cfg.augment, repeats)
    split = {
        "dataset": name,
        "root": cfg.root,
        "labeled_spec": str(cfg.labeled),
        "rule": cfg.split_rule,
        **split,
    }
    split.update(num_labeled_items=len(images), num_unlabeled_items=len(unlabeled[0]))
    split.update(val=[v.case_id for v in val], test=[v.case_id for v in test])
    if not unlabeled[0] and str(cfg.labeled).strip().lower() != "all":
        logger.warning(
            "dataset '%s': every training case is labeled (data.labeled=%r), so no unlabeled case is left; only "
            "the supervised method can train (arco train --method supervised), or add unlabeled cases",
            name,
            cfg.labeled,
        )
    schemes = tuple(channel_normalization) or (normalization,) * len(channel_names)
    return SegmentationData(
        name,
        spatial_dims,
        len(class_names),
        tuple(class_names),
        tuple(patch_size),
        normalization,
        lab,
        unl,
        list(val),
        list(test),
        split,
        in_channels=len(channel_names),
        channel_names=tuple(channel_names),
        channel_normalization=schemes,
    )
