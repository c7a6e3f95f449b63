"""Image files in the formats users bring: NIfTI (nibabel), NRRD, MetaImage (.mha/.mhd) and DICOM series
folders (SimpleITK).

Every reader returns ``(array, affine, spacing)``: the array in ``(Z, Y, X)`` order (SimpleITK's
``GetArrayFromImage`` order, the transposed nibabel array), the 4x4 voxel-to-world matrix in the NIfTI (RAS)
convention with nibabel's axis order (X, Y, Z), and the voxel size per array axis. ITK formats store LPS
coordinates; ``affine = diag(-1, -1, 1, 1) @ [direction * spacing | origin]``, so one affine describes the
geometry of every format and labels can be written back in any of them (`write_image`). Problems raise
`DataError` naming the file and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from arco._checks import DataError, path_problem

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "OUTPUT_FORMATS",
    "image_suffix",
    "image_stem",
    "is_image_file",
    "is_dicom_folder",
    "dicom_series_files",
    "missing_file",
    "split_channel",
    "read_image",
    "read_nifti",
    "read_header",
    "write_image",
    "itk_geometry",
    "affine_from_itk",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: ``--format`` name -> file suffix of written labels (MetaImage is written as one ``.mha`` file).
OUTPUT_FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}
_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<index>\d{4})$")
_HINT = "convert it to NIfTI, NRRD or MHA, or re-export it"


def image_suffix(path: str | os.PathLike) -> str:
    """The known image suffix of ``path`` (``.nii.gz``, ``.nrrd``, ...; case-insensitive) or ``""``."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``scan.nii.gz`` -> ``scan``; a DICOM folder -> its name)."""
    name = Path(path).name
    suffix = image_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else name


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).is_file() and bool(image_suffix(path))


def split_channel(stem: str) -> tuple[str, int] | None:
    """nnU-Net channel naming: ``case_0001`` -> ``("case", 1)``; None when ``stem`` has no ``_dddd`` ending."""
    m = _CHANNEL.match(stem)
    return (m["case"], int(m["index"])) if m else None


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"  # DICOM Part 10 preamble
    except OSError:
        return False


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder whose first plain files (up to 5, images excluded) are DICOM files."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = [f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".") and not image_suffix(f)]
    return any(_is_dicom_file(f) for f in files[:5])


def affine_from_itk(spacing, origin, direction) -> np.ndarray:
    """4x4 RAS affine (nibabel axis order) from ITK spacing/origin/direction (LPS, ITK axis order), 2D or 3D."""
    n = len(spacing)
    d = np.asarray(direction, dtype=np.float64).reshape(n, n)
    m = np.eye(3)
    m[:n, :n] = d * np.asarray(spacing, dtype=np.float64)[None]
    t = np.zeros(3)
    t[:n] = origin
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = _LPS @ m, _LPS @ t
    return affine


def itk_geometry(affine: np.ndarray, ndim: int = 3) -> tuple[tuple, tuple, tuple]:
    """``(spacing, origin, direction)`` in ITK conventions (LPS, ITK axis order) for a RAS ``affine``."""
    a = np.asarray(affine, dtype=np.float64)
    m, t = _LPS @ a[:3, :3], _LPS @ a[:3, 3]
    m, t = m[:ndim, :ndim], t[:ndim]
    spacing = np.linalg.norm(m, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    direction = m / spacing[None]
    return tuple(map(float, spacing)), tuple(map(float, t)), tuple(map(float, direction.ravel()))


def _sitk():
    import SimpleITK as sitk

    return sitk


def missing_file(path: str | os.PathLike, fix: str = "check the path") -> DataError:
    """The error for an image file that is not there: says why (absent, symlink loop, broken link) and ``fix``."""
    problem = path_problem(path)
    return DataError(f"{path}: {'file not found' if problem == 'does not exist' else problem}; {fix}")


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file with nibabel; return ``(array (Z, Y, X), affine, spacing per array axis)``."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise missing_file(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for corrupt files; re-raised as DataError
        raise DataError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc}); re-export the file") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    zooms = tuple(round(float(z), 6) for z in img.header.get_zooms()[: data.ndim])  # float32 header noise
    return data.T, np.asarray(img.affine, dtype=np.float64), zooms[::-1]


def dicom_series_files(path: str | os.PathLike, allow_gaps: bool = False) -> list[str]:
    """File names of the single DICOM series in folder ``path``, in slice order, after checking the series whole
    (headers only; `arco.data.dicom.check_dicom_series`).

    Raises:
        DataError: no series, several series, an unreadable file in the folder, a duplicated slice, slices of
            another size or orientation, or (unless ``allow_gaps``) missing or unevenly spaced slices.
    """
    from arco.data.dicom import check_dicom_series

    return list(check_dicom_series(path, allow_gaps).files)


def _read_dicom(path: Path, allow_gaps: bool = False):
    sitk = _sitk()
    files = dicom_series_files(path, allow_gaps)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # the spacing was checked above (ITK only warns)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        bad = next((f for f in files if not _pixels_readable(f)), None)
        where = f"{bad}: cannot read this slice's pixel data" if bad else f"{path}: cannot read the DICOM series"
        raise DataError(f"{where} ({_itk_reason(exc)}); re-export the series") from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _pixels_readable(path: str) -> bool:
    try:
        _sitk().ReadImage(path)
    except RuntimeError:
        return False
    return True


def _itk_reason(exc: RuntimeError) -> str:
    """The useful line of an ITK exception (its last line; ITK's I/O errno text is often stale)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[-1]
    if text.startswith("Reason:") and len(lines) > 1 and "cannot be read" in lines[-2]:
        return "the voxel data is damaged or cut off (the header promises more data than the file holds)"
    return text


def _read_itk(path: Path, allow_gaps: bool = False):
    sitk = _sitk()
    if path.is_dir():
        return _read_dicom(path, allow_gaps)
    if not path.is_file():
        raise missing_file(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot read the image ({_itk_reason(exc)}); {_HINT}") from exc


def read_image(
    path: str | os.PathLike, allow_slice_gaps: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a NIfTI/NRRD/MetaImage file or a DICOM series folder whole: ``(array (Z, Y, X), affine, spacing)``.

    Every voxel is read (a file cut off after its header fails here, not later). ``allow_slice_gaps`` accepts a
    DICOM series with missing slices (`arco.data.dicom`).

    Raises:
        DataError: missing, unreadable or cut-off file, a DICOM folder that is not one complete, evenly spaced
            series, several components per voxel (give one file per channel), an unsupported file type or
            voxel type.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path)
    if not suffix and not path.is_dir():
        if not os.path.lexists(path) or not path.exists():
            raise missing_file(path)
        raise DataError(
            f"{path}: not a supported image ({', '.join(IMAGE_SUFFIXES)} file or DICOM series folder); {_HINT}"
        )
    img = _read_itk(path, allow_slice_gaps)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: {img.GetNumberOfComponentsPerPixel()} components per voxel (vector/RGB image); give one "
            "file per channel, named <case>_0000, <case>_0001, ... (nnU-Net)"
        )
    array = _sitk().GetArrayFromImage(img)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    affine = affine_from_itk(img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    spacing = tuple(round(float(s), 6) for s in img.GetSpacing())[::-1]
    return array, affine, spacing


def read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (array order) and affine from the header only (a DICOM folder is read whole)."""
    path = Path(path)
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            img = nib.load(str(path))
        except Exception as exc:  # noqa: BLE001 - see read_nifti
            raise DataError(f"{path}: cannot read NIfTI header ({type(exc).__name__}: {exc}); re-export it") from exc
        shape = tuple(img.shape[:3]) if len(img.shape) == 4 and img.shape[3] == 1 else tuple(img.shape)
        return shape[::-1], np.asarray(img.affine, dtype=np.float64)
    if path.is_dir() or not suffix:
        array, affine, _ = read_image(path)
        return tuple(array.shape), affine
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot read the image header ({type(exc).__name__}); {_HINT}") from exc
    size = tuple(int(s) for s in reader.GetSize())
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    affine = affine_from_itk(reader.GetSpacing()[:3], reader.GetOrigin()[:3], _direction3(reader))
    return size[::-1], affine


def _direction3(reader) -> tuple[float, ...]:
    n = reader.GetDimension()
    d = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(n, n)
    return tuple(d[: min(n, 3), : min(n, 3)].ravel())


def write_image(
    array_zyx: np.ndarray, affine: np.ndarray, out_path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write ``array_zyx`` ((Z, Y, X) or (Y, X)) with geometry ``affine`` as NIfTI, NRRD or MHA (by suffix),
    atomically (temporary file in the same folder, then renamed). Refuses to overwrite unless asked.

    NIfTI is written with nibabel (the affine as sform and qform); NRRD and MHA with SimpleITK (LPS).
    """
    out_path = Path(out_path)
    suffix = image_suffix(out_path)
    if suffix not in (*NIFTI_SUFFIXES, ".nrrd", ".mha"):
        raise ValueError(f"{out_path}: can only write .nii.gz, .nii, .nrrd or .mha files")
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
    array = np.asarray(array_zyx)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp{suffix}")
    try:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), np.asarray(affine, dtype=np.float64)), str(tmp))
        else:
            sitk = _sitk()
            img = sitk.GetImageFromArray(np.ascontiguousarray(array))
            spacing, origin, direction = itk_geometry(affine, array.ndim)
            img.SetSpacing(spacing)
            img.SetOrigin(origin)
            img.SetDirection(direction)
            sitk.WriteImage(img, str(tmp), True)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path
