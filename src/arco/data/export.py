"""Export the whole-volume cases of a dataset split as NIfTI files (image + label).

Why: the h5 layouts (ACDC/SSL4MIS, LA/UA-MT, the built-in phantoms) are not viewable in common viewers and are
not what `arco predict` reads; exporting gives scans and labels to run prediction and file-based evaluation on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arco._checks import DataError
from arco.data.build import build_data
from arco.data.config import DataConfig
from arco.data.formats import write_image
from arco.data.volume import Volume

__all__ = ["export_nifti", "write_nifti"]


def write_nifti(
    array_zyx: np.ndarray, affine: np.ndarray, out_path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write an array ``(Z, Y, X)`` as NIfTI (nibabel order X, Y, Z) atomically; refuses to overwrite."""
    return write_image(array_zyx, affine, out_path, overwrite=overwrite)


def _affine(volume: Volume) -> np.ndarray:
    if volume.affine is not None:
        return np.asarray(volume.affine, dtype=np.float64)
    spacing = volume.spacing or (1.0,) * 3
    return np.diag([*map(float, spacing[::-1]), 1.0])  # array axes are (Z, Y, X); NIfTI axes are (X, Y, Z)


def export_nifti(cfg: DataConfig, split: str, out: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """Write ``out/images/<case>.nii.gz`` (the normalised image the network sees) and
    ``out/labels/<case>.nii.gz``. Multi-channel cases are written one file per channel with nnU-Net naming
    (``images/<case>_0000.nii.gz``, ``_0001``, ...), the form `arco predict` groups into one case.

    Returns the exported case ids. Raises ``DataError`` for an unknown split or a split without cases.
    """
    if split not in ("val", "test"):
        raise DataError(f"export: split must be 'val' or 'test', got {split!r}")
    data = build_data(cfg)
    volumes = data.val if split == "val" else data.test
    if not volumes:
        raise DataError(f"{cfg.root}: the {split} split of {cfg.dataset} has no cases to export")
    out = Path(out)

    def image_paths(v: Volume) -> list[Path]:
        if v.in_channels == 1:
            return [out / "images" / f"{v.case_id}.nii.gz"]
        return [out / "images" / f"{v.case_id}_{c:04d}.nii.gz" for c in range(v.in_channels)]

    targets = [(image_paths(v), out / "labels" / f"{v.case_id}.nii.gz") for v in volumes]
    existing = [str(p) for imgs, lab in targets for p in (*imgs, lab) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (and {len(existing) - 1} more); pass --overwrite to replace them")
    for v, (img_paths, lab_path) in zip(volumes, targets):
        affine = _affine(v)
        channels = [v.image] if v.in_channels == 1 else list(v.image)
        for ch, path in zip(channels, img_paths):
            write_image(ch.astype(np.float32), affine, path, overwrite=True)
        if v.label is not None:
            write_image(v.label.astype(np.uint8), affine, lab_path, overwrite=True)
    return [v.case_id for v in volumes]
