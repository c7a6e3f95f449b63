"""DICOM series folders checked whole before a voxel is used: one series, every file a readable slice of it, one
orientation and slice size, no duplicated slice, evenly spaced slices.

GDCM (through SimpleITK) lists the files of a series and silently leaves out any file it cannot parse, and ITK stacks
whatever slices it is given, only printing a warning when they are unevenly spaced: a slice cut in half would
disappear from the scan and the label would have one slice less, in the wrong place. Here every file of the folder
is accounted for and the slice positions (Image Position Patient projected on the slice normal) are checked; each
problem is a `DataError` naming the file and the slice position. A gap (slices further apart than the series' step)
is accepted only when asked (``allow_gaps``, ``arco predict --allow-slice-gaps``) and is then reported in
`DicomSeries.gaps` for the caller to print.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arco._checks import DataError

__all__ = ["DicomSeries", "check_dicom_series"]

logger = logging.getLogger(__name__)

#: Two slices closer than this (mm) are the same slice twice.
DUPLICATE_MM = 1e-3
#: Relative tolerance on the distance between neighbouring slices (positions are written with few decimals).
STEP_RTOL = 0.01


@dataclass(frozen=True)
class DicomSeries:
    """A checked series: its files in slice order, their positions along the slice normal (mm; None without
    position tags) and a sentence per gap that was accepted (``allow_gaps``)."""

    folder: Path
    files: tuple[str, ...]
    positions: tuple[float, ...] | None
    gaps: tuple[str, ...] = ()


def _sitk():
    import SimpleITK as sitk

    return sitk


def _series_files(folder: Path) -> list[str]:
    sitk = _sitk()
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise DataError(f"{folder}: cannot list DICOM series ({exc}); check the folder") from exc
    if not series:
        raise DataError(f"{folder}: no DICOM series found; give a folder holding the .dcm files of one series")
    if len(series) > 1:
        raise DataError(
            f"{folder}: holds {len(series)} DICOM series ({', '.join(series[:4])}); give a folder with one series "
            "(move each series into its own folder)"
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def _header(path: str) -> dict:
    """Slice size, orientation, position and identifiers of one DICOM file (header only)."""
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot read this DICOM slice's header; re-export the series") from exc

    def tag(key: str) -> str | None:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None

    def numbers(key: str) -> tuple[float, ...] | None:
        text = tag(key)
        try:
            return tuple(float(v) for v in text.split("\\")) if text else None
        except ValueError:
            return None

    return {
        "size": tuple(reader.GetSize()[:2]),
        "orientation": numbers("0020|0037"),
        "position": numbers("0020|0032"),
        "uid": tag("0008|0018"),
    }


def _where(files: list[str], positions: np.ndarray, i: int) -> str:
    return f"{Path(files[i]).name} (slice {i + 1} of {len(files)}, at {positions[i]:.4g} mm)"


def _foreign(folder: Path, files: list[str]) -> list[Path]:
    """Visible files of the folder that are not slices of the series (GDCM skips what it cannot parse)."""
    listed = {os.path.realpath(f) for f in files}
    return [
        f
        for f in sorted(folder.iterdir())
        if not f.name.startswith(".") and not f.is_dir() and os.path.realpath(f) not in listed
    ]


def _foreign_error(folder: Path, files: list[str], others: list[Path]) -> DataError:
    context = ""
    try:  # where the series is missing a slice, if it is: the position of the unreadable file
        pos = _positions(_check_headers(folder, files))
        problems = [] if pos is None else _spacing_problems(folder, files, pos)
        context = f"; the series has {problems[0]}" if problems else ""
    except DataError:
        pass
    more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
    return DataError(
        f"{others[0]}{more}: not a readable slice of the DICOM series in {folder} (a damaged or cut-off file, or "
        f"not DICOM){context}. A series is never read with a file left out: re-export the series, or move the file "
        "out of the folder (a gap it leaves is then an error unless --allow-slice-gaps)"
    )


def _check_headers(folder: Path, files: list[str]) -> list[dict]:
    heads = [_header(f) for f in files]
    first = heads[0]
    for f, h in zip(files, heads):
        if h["size"] != first["size"]:
            raise DataError(
                f"{f}: slice size {h['size']} differs from {Path(files[0]).name} {first['size']} in the DICOM series "
                f"{folder}; a folder must hold one series of equal slices"
            )
        o, o0 = h["orientation"], first["orientation"]
        if (o is None) != (o0 is None) or (o is not None and not np.allclose(o, o0, atol=1e-4)):
            raise DataError(
                f"{f}: slice orientation {o} differs from {Path(files[0]).name} {o0} in the DICOM series {folder} "
                "(mixed series); put each series in its own folder"
            )
    uids = [h["uid"] for h in heads]
    for i, uid in enumerate(uids):
        if uid is not None and uid in uids[:i]:
            j = uids.index(uid)
            raise DataError(
                f"{files[i]}: the same DICOM slice (SOP Instance UID {uid}) as {Path(files[j]).name} in {folder}; "
                "remove the duplicated file"
            )
    return heads


def _positions(heads: list[dict]) -> np.ndarray | None:
    o = heads[0]["orientation"]
    if o is None or len(o) != 6 or any(h["position"] is None or len(h["position"]) != 3 for h in heads):
        return None
    normal = np.cross(np.asarray(o[:3]), np.asarray(o[3:]))
    return np.asarray([float(np.dot(h["position"], normal)) for h in heads])


def _spacing_problems(folder: Path, files: list[str], pos: np.ndarray) -> list[str]:
    """Sentences for every neighbour pair further apart than the series' step; raises on duplicated slices."""
    order = np.argsort(pos, kind="stable")
    files, pos = [files[i] for i in order], pos[order]
    diffs = np.diff(pos)
    for i, d in enumerate(diffs):
        if d < DUPLICATE_MM:
            raise DataError(
                f"{files[i + 1]}: lies at the same position as {_where(files, pos, i)} in the DICOM series {folder} "
                "(a duplicated slice); remove one of the two files"
            )
    if diffs.size == 0:
        return []
    step = float(diffs.min())
    problems = []
    for i, d in enumerate(diffs):
        if d <= step * (1 + STEP_RTOL) + DUPLICATE_MM:
            continue
        k = d / step
        if abs(k - round(k)) <= STEP_RTOL * round(k):
            what = f"{round(k) - 1} slice(s) missing"
        else:
            what = "unevenly spaced slices"
        problems.append(
            f"{what} between {_where(files, pos, i)} and {_where(files, pos, i + 1)}: {d:.4g} mm apart where the "
            f"series' step is {step:.4g} mm"
        )
    return problems


def check_dicom_series(path: str | os.PathLike, allow_gaps: bool = False) -> DicomSeries:
    """Check the DICOM series folder ``path`` from its headers (see the module docstring).

    Raises:
        DataError: no series, several series, a file that is not a readable slice of the series, slices of
            different size or orientation, a duplicated slice, or (unless ``allow_gaps``) missing or unevenly
            spaced slices; each names the file and its slice position.
    """
    folder = Path(path)
    files = _series_files(folder)
    others = _foreign(folder, files)
    if others:
        raise _foreign_error(folder, files, others)
    heads = _check_headers(folder, files)
    pos = _positions(heads)
    if pos is None:
        if len(files) > 1:
            logger.warning(
                "%s: the DICOM slices carry no position/orientation tags; the slice spacing cannot be checked", folder
            )
        return DicomSeries(folder, tuple(files), None)
    problems = _spacing_problems(folder, files, pos)
    if problems and not allow_gaps:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(
            f"{folder}: DICOM series with {problems[0]}{more}. A scan read with a gap would be segmented on the "
            "wrong geometry; re-export the complete series, or pass --allow-slice-gaps to accept it (the output "
            "then has one slice per file, spaced evenly from the first slice to the last)"
        )
    return DicomSeries(folder, tuple(files), tuple(float(p) for p in pos), tuple(problems))
