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
from arco.data.volume import Volume

__all__ = ["export_nifti", "write_nifti"]


def write_nifti(
    array_zyx: np.ndarray, affine: np.ndarray, out_path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write an array ``(Z, Y, X)`` as NIfTI (nibabel order X, Y, Z) atomically; refuses to overwrite."""
    import nibabel as nib

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp.nii.gz")
    try:
        nib.save(nib.Nifti1Image(np.ascontiguousarray(np.asarray(array_zyx).T), affine), str(tmp))
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path


def _affine(volume: Volume) -> np.ndarray:
    if volume.affine is not None:
        return np.asarray(volume.affine, dtype=np.float64)
    spacing = volume.spacing or (1.0,) * volume.image.ndim
    return np.diag([*map(float, spacing[::-1]), 1.0])  # array axes are (Z, Y, X); NIfTI axes are (X, Y, Z)


def export_nifti(cfg: DataConfig, split: str, out: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """Write ``out/images/<case>.nii.gz`` (the normalised image the network sees) and ``out/labels/<case>.nii.gz``.

    Returns the exported case ids. Raises ``DataError`` for an unknown split or a split without cases.
    """
    if split not in ("val", "test"):
        raise DataError(f"export: split must be 'val' or 'test', got {split!r}")
    data = build_data(cfg)
    volumes = data.val if split == "val" else data.test
    if not volumes:
        raise DataError(f"{cfg.root}: the {split} split of {cfg.dataset} has no cases to export")
    out = Path(out)
    targets = [(out / "images" / f"{v.case_id}.nii.gz", out / "labels" / f"{v.case_id}.nii.gz") for v in volumes]
    existing = [str(p) for pair in targets for p in pair if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (and {len(existing) - 1} more); pass --overwrite to replace them")
    for v, (img_path, lab_path) in zip(volumes, targets):
        affine = _affine(v)
        write_nifti(v.image.astype(np.float32), affine, img_path, overwrite=True)
        if v.label is not None:
            write_nifti(v.label.astype(np.uint8), affine, lab_path, overwrite=True)
    return [v.case_id for v in volumes]
