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

    Returns the exported case ids. The files are written to a temporary folder and moved into ``out`` when every
    case is written: a failure leaves ``out`` as it was.

    Raises:
        DataError: an unknown split or a split without cases (and whatever reading the dataset raises).
        WriteError: ``out`` is a file or lies under one, or is not writable. FileExistsError: outputs exist and
            ``overwrite`` is False.
    """
    from arco._io import check_out_dir, staged_outputs

    if split not in ("val", "test"):
        raise DataError(f"export: split must be 'val' or 'test', got {split!r}")
    out = check_out_dir(out)
    data = build_data(cfg)
    volumes = data.val if split == "val" else data.test
    if not volumes:
        raise DataError(f"{cfg.root}: the {split} split of {cfg.dataset} has no cases to export")

    def image_names(v: Volume) -> list[str]:
        if v.in_channels == 1:
            return [f"images/{v.case_id}.nii.gz"]
        return [f"images/{v.case_id}_{c:04d}.nii.gz" for c in range(v.in_channels)]

    targets = [(image_names(v), f"labels/{v.case_id}.nii.gz") for v in volumes]
    existing = [str(out / p) for imgs, lab in targets for p in (*imgs, lab) if (out / p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (and {len(existing) - 1} more); pass --overwrite to replace them")
    with staged_outputs(out) as tmp:
        for v, (img_names, lab_name) in zip(volumes, targets):
            affine = _affine(v)
            channels = [v.image] if v.in_channels == 1 else list(v.image)
            for ch, name in zip(channels, img_names):
                write_image(ch.astype(np.float32), affine, tmp / name, overwrite=True)
            if v.label is not None:
                write_image(v.label.astype(np.uint8), affine, tmp / lab_name, overwrite=True)
    return [v.case_id for v in volumes]
