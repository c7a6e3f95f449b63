"""`inspect_dataset`: layout detection and a summary of a dataset folder (what `arco data inspect` prints)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import DataError
from arco.data.build import build_data
from arco.data.config import DataConfig
from arco.data.splits import possible_labeled

__all__ = ["detect_layout", "inspect_dataset"]


def detect_layout(root: str | Path) -> str:
    """Return the dataset name whose on-disk layout ``root`` has: ``acdc`` (SSL4MIS), ``la`` (UA-MT),
    ``nnunet`` (``phantom_mp`` for the built-in MP-MRI phantom).

    Raises:
        DataError: missing folder or unknown layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; give a dataset folder (ACDC/SSL4MIS, LA/UA-MT or nnU-Net raw)")
    if (root / "train_slices.list").is_file() or (root / "data" / "slices").is_dir():
        return "acdc"
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        try:  # the built-in MP-MRI phantom is an nnU-Net folder read as 2D slices
            name = json.loads((root / "dataset.json").read_text()).get("name")
        except (OSError, ValueError, AttributeError):
            name = None
        return "phantom_mp" if name == "phantom_mp" else "nnunet"
    if (root / "train.list").is_file():
        return "la"
    raise DataError(
        f"{root}: unknown layout; expected train_slices.list + data/slices/ (ACDC, SSL4MIS), train.list + "
        "<case>/mri_norm2.h5 (LA, UA-MT) or dataset.json + imagesTr/ (nnU-Net v2)"
    )


def _stats(arrays: list[np.ndarray], labels: list[np.ndarray], num_classes: int, channels: int) -> dict[str, Any]:
    counts = np.zeros(num_classes, np.int64)
    for lab in labels:
        counts += np.bincount(lab.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
    total = max(int(counts.sum()), 1)

    def summary(arrs: list[np.ndarray]) -> dict[str, float]:
        return {
            "min": float(min(a.min() for a in arrs)),
            "max": float(max(a.max() for a in arrs)),
            "mean": float(np.mean([a.mean() for a in arrs])),
        }

    per_channel = [summary([a[c] if channels > 1 else a for a in arrays]) for c in range(channels)]
    return {
        "class_voxels": counts.tolist(),
        "class_percent": [round(100.0 * c / total, 3) for c in counts],
        "intensity": per_channel[0] if channels == 1 else summary(arrays),
        "channel_intensity": per_channel,
    }


def inspect_dataset(
    root: str | Path, labeled: str | None = None, split_rule: str = "patients", dataset: str = ""
) -> dict[str, Any]:
    """Summarise a dataset folder: layout, counts, channels, class frequencies, intensities, shapes, spacings
    and, when ``labeled`` is given, the split it would produce. ``dataset`` overrides the detected layout
    (e.g. ``lits`` on an nnU-Net folder).

    Returns a JSON-serialisable dict. The folder itself must be readable (`DataError` otherwise); a
    ``labeled`` count the folder cannot satisfy does not fail the summary: ``split["error"]`` says why and
    what is possible.
    """
    kind = dataset or detect_layout(root)
    base = DataConfig(dataset=kind, root=str(root), labeled="all", augment=False, generate=False)
    full = build_data(base)
    train_imgs = list(full.labeled.images)
    train_labs = list(full.labeled.labels)
    vols = full.val + full.test
    stats = _stats(
        train_imgs + [v.image for v in vols],
        train_labs + [v.label for v in vols],
        full.num_classes,
        full.in_channels,
    )
    split: dict[str, Any] = dict(full.split)
    if labeled is not None and str(labeled) != "all":
        try:
            split = build_data(replace(base, labeled=str(labeled), split_rule=split_rule)).split
        except DataError as exc:
            split = {**split, "labeled_spec": str(labeled), "rule": split_rule, "error": str(exc)}
    shapes = Counter(tuple(a.shape) for a in train_imgs)
    spacings = sorted({tuple(round(s, 4) for s in v.spacing) for v in vols if v.spacing is not None})
    return {
        "root": str(root),
        "layout": kind,
        "spatial_dims": full.spatial_dims,
        "classes": list(full.class_names),
        "channels": list(full.channel_names),
        "cases": {
            "train": len(full.split["labeled"]),
            "val": len(full.val),
            "test": len(full.test),
        },
        "train_items": len(train_imgs),
        "item_kind": "slices" if full.spatial_dims == 2 else "volumes",
        "val_test_slices": int(sum(v.shape[0] for v in vols)),
        **stats,
        "train_shapes": {"x".join(map(str, s)): n for s, n in shapes.most_common(5)},
        "val_test_shapes": sorted({"x".join(map(str, v.shape)) for v in vols})[:10],
        "spacings": [list(s) for s in spacings[:10]],
        "normalization": full.normalization,
        "channel_normalization": list(full.channel_normalization),
        "default_patch_size": list(full.patch_size),
        "possible_labeled": possible_labeled(len(full.split["labeled"])),
        "split": split,
    }
