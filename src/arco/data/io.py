"""Reading and writing scans: images of any supported format (`arco.data.formats`; arrays ``(Z, Y, X)`` =
the transposed nibabel array), h5 pairs, list files.

Every reader validates what it returns and raises `DataError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arco._checks import DataError, path_problem
from arco.data.formats import (
    NIFTI_SUFFIXES,
    image_stem,
    image_suffix,
    read_header,
    read_image,
    read_nifti,
    split_channel,
    write_image,
)
from arco.data.volume import Volume, normalize

__all__ = [
    "read_scan",
    "read_image",
    "read_nifti",
    "write_label_like",
    "read_h5",
    "write_h5",
    "read_list",
    "check_image",
    "check_label",
]


def check_image(image: np.ndarray, source: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Return ``image`` as float32 after checking it is numeric, finite and (optionally)
    ``ndim``-dimensional."""
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(
            f"{source}: image has voxel type {arr.dtype}; expected real numbers (integer or float), one value per "
            "voxel; re-export the scan"
        )
    if ndim is not None and arr.ndim != ndim:
        raise DataError(
            f"{source}: expected a {ndim}D image, got shape {arr.shape}; check that the dataset is "
            f"{'2D slices' if ndim == 2 else '3D volumes'} or change data.spatial_dims"
        )
    if arr.size == 0:
        raise DataError(f"{source}: image is empty (shape {arr.shape})")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{source}: image has {bad} NaN/inf values; fix or re-export the file")
    return arr


def check_label(
    label: np.ndarray, image_shape: tuple[int, ...], source: str | os.PathLike, num_classes: int | None = None
) -> np.ndarray:
    """Return ``label`` as int64 after checking shape, integrality and range ``0..num_classes-1``."""
    arr = np.asarray(label)
    if tuple(arr.shape) != tuple(image_shape):
        raise DataError(
            f"{source}: label shape {arr.shape} does not match image shape {tuple(image_shape)}; "
            "image and label must be on the same grid"
        )
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{source}: label has non-integer values; labels must be class indices")
    out = arr.astype(np.int64, copy=False)
    lo, hi = (int(out.min()), int(out.max())) if out.size else (0, 0)
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        rng = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
        raise DataError(
            f"{source}: label values {lo}..{hi} are outside {rng}; check the class map "
            "(dataset.json 'labels' or data.num_classes)"
        )
    return out


def _nib():
    import nibabel as nib

    return nib


def _one_channel(path: Path, ndim: int, allow_gaps: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    data, affine, spacing = read_image(path, allow_slice_gaps=allow_gaps)
    if data.ndim == 2 and ndim == 3:
        data, spacing = data[None], (1.0, *spacing)
    return check_image(data, path, ndim), affine, spacing


def read_scan(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    normalization: str | Sequence[str] = "none",
    ndim: int = 3,
    ct_window: tuple[float, float] = (-200.0, 250.0),
    allow_slice_gaps: bool = False,
) -> Volume:
    """Read a scan as a `Volume` with image ``(Z, Y, X)`` (or ``(C, Z, Y, X)``) normalised per channel.

    Args:
        path: a NIfTI/NRRD/MetaImage file or a DICOM series folder; or a list of such, one per channel (all on
            the same grid), giving a ``(C, Z, Y, X)`` image when there are several.
        normalization: ``minmax``, ``zscore``, ``ct`` or ``none`` (see `arco.data.volume.normalize`) for every
            channel, or one per channel.
        ndim: required dimensionality (3; a 2D file gets a leading axis of size 1 when ``ndim=3``).
        ct_window: HU window for ``ct``.
        allow_slice_gaps: accept a DICOM series with missing slices (`arco.data.dicom`).

    Raises:
        DataError: missing, unreadable, cut-off or corrupt file (every voxel is read), wrong dimensionality or
            voxel type, NaN/inf intensities, channels on different grids, a DICOM series with a missing,
            duplicated or unreadable slice.
    """
    paths = [Path(p) for p in ([path] if isinstance(path, (str, os.PathLike)) else path)]
    if not paths:
        raise ValueError("read_scan(): no file given")
    schemes = [normalization] * len(paths) if isinstance(normalization, str) else list(normalization)
    if len(schemes) != len(paths):
        raise ValueError(f"read_scan(): {len(schemes)} normalisation schemes for {len(paths)} channel files")
    for p in paths:
        if not image_suffix(p) and not p.is_dir():
            raise DataError(
                f"{p}: expected a NIfTI (.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha, .mhd) file or a DICOM "
                "series folder"
            )
    image, affine, spacing = _one_channel(paths[0], ndim, allow_slice_gaps)
    channels = [normalize(image, schemes[0], ct_window)]
    for p, scheme in zip(paths[1:], schemes[1:]):
        other, other_affine, _ = _one_channel(p, ndim, allow_slice_gaps)
        if other.shape != image.shape or not np.allclose(other_affine, affine, atol=1e-3, rtol=1e-4):
            raise DataError(
                f"{p}: channel grid (shape {other.shape}) differs from {paths[0]} (shape {image.shape}) or its "
                "affine does not match; all channels of a case must be co-registered on one grid (resample them)"
            )
        channels.append(normalize(other, scheme, ct_window))
    name = image_stem(paths[0])
    if len(paths) > 1 and split_channel(name):
        name = split_channel(name)[0]
    out = channels[0] if len(channels) == 1 else np.stack(channels)
    return Volume(name, out, None, spacing, affine, str(paths[0]))


def write_label_like(
    label_zyx: np.ndarray,
    reference_path: str | os.PathLike,
    out_path: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Write a label map ``(Z, Y, X)`` in the geometry (shape, affine, spacing) of ``reference_path``.

    A NIfTI reference written as NIfTI keeps its header (nibabel); any other pair (NRRD, MHA, DICOM folder
    references, or ``.nrrd``/``.mha`` outputs) goes through the reference's affine (`formats.write_image`).
    The file is written atomically (a temporary file in the same folder, then renamed); dtype is uint8 when
    the labels fit, int16 otherwise.

    Raises:
        DataError: unreadable reference or a shape that does not match it.
        FileExistsError: ``out_path`` exists and ``overwrite`` is False.
    """
    reference_path, out_path = Path(reference_path), Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    ref_shape, ref_affine = read_header(reference_path)
    label = np.asarray(label_zyx)
    if tuple(label.shape) != tuple(ref_shape):
        raise DataError(
            f"{out_path}: label shape {label.shape} (Z, Y, X) does not match the reference {reference_path} "
            f"of shape {tuple(ref_shape)} (Z, Y, X)"
        )
    dtype = np.uint8 if label.size == 0 or (label.min() >= 0 and label.max() < 256) else np.int16
    if image_suffix(reference_path) not in NIFTI_SUFFIXES or image_suffix(out_path) not in NIFTI_SUFFIXES:
        return write_image(label.astype(dtype), ref_affine, out_path, overwrite=True)
    nib = _nib()
    ref = nib.load(str(reference_path))
    header = ref.header.copy()
    header.set_data_dtype(dtype)
    header.set_data_shape(tuple(ref_shape)[::-1])
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    out = nib.Nifti1Image(np.ascontiguousarray(label.T.astype(dtype)), ref.affine, header)
    suffix = ".nii.gz" if out_path.name.endswith(".nii.gz") else ".nii"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp{suffix}")
    try:
        nib.save(out, str(tmp))
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path


def read_h5(
    path: str | os.PathLike, keys: tuple[str, ...] = ("image", "label"), transpose: bool = False
) -> dict[str, np.ndarray]:
    """Read datasets ``keys`` from an h5 file (``transpose`` reverses axis order, e.g. LA (X, Y, Z) -> (Z, Y,
    X))."""
    import h5py

    path = Path(path)
    if not path.is_file():
        problem = path_problem(path)
        raise DataError(f"{path}: {'file not found' if problem == 'does not exist' else problem}; check data.root")
    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in keys if k not in fh]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {missing}; found {sorted(fh.keys())}; expected h5 datasets {list(keys)}"
                )
            out = {k: fh[k][()] for k in keys}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError/... for corrupt files
        raise DataError(f"{path}: cannot read h5 file ({type(exc).__name__}: {exc}); re-create it") from exc
    return {k: v.T if transpose else v for k, v in out.items()}


def write_h5(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to an h5 file (gzip level 1), atomically."""
    import h5py

    from arco._io import atomic_path

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for k, v in arrays.items():
                fh.create_dataset(k, data=v, compression="gzip", compression_opts=1)


def read_list(path: str | os.PathLike, required: bool = True) -> list[str]:
    """Read a list file (one id per line; blank lines ignored). Missing + ``required`` raises `DataError`."""
    path = Path(path)
    if not path.is_file():
        if not required:
            return []
        problem = path_problem(path)
        problem = "list file not found" if problem == "does not exist" else f"list file {problem}"
        raise DataError(f"{path}: {problem}; check data.root (or generate the dataset there)")
    from arco._io import read_text

    text = read_text(path, "list file", DataError, "expected one case id per line")
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if required and not ids:
        raise DataError(f"{path}: list file is empty")
    return ids
