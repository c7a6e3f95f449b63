"""Turn paths given by a user into cases: image files, DICOM series folders and nnU-Net channel files.

Used by ``arco predict``: ``scan.nii.gz`` is a case; so is a DICOM series folder; a folder of images is one case
per file (or per DICOM series subfolder); with a multi-channel model, files named ``<case>_0000<ext>``,
``<case>_0001<ext>``, ... are grouped into one case per ``<case>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arco._checks import DataError, path_problem
from arco.data.formats import IMAGE_SUFFIXES, image_stem, image_suffix, is_dicom_folder, split_channel

__all__ = ["Case", "collect_cases", "list_images"]


@dataclass(frozen=True)
class Case:
    """One scan to segment: ``files`` holds one path per channel (a DICOM folder counts as one file)."""

    name: str
    files: tuple[Path, ...]

    @property
    def reference(self) -> Path:
        """The file whose geometry the prediction takes (the first channel)."""
        return self.files[0]

    @property
    def is_dicom(self) -> bool:
        return self.files[0].is_dir()


_SUPPORTED = f"{', '.join(IMAGE_SUFFIXES)} files or DICOM series folders"


def list_images(folder: Path, what: str) -> list[Path]:
    """Image files and DICOM series subfolders of ``folder`` (sorted); any other visible file is an error
    naming it. Other subfolders are skipped."""
    if not folder.is_dir():
        problem = path_problem(folder) if not folder.exists() else "is a file, not a folder"
        raise FileNotFoundError(f"{what} folder {folder} {problem}")
    found, others = [], []
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            continue
        if f.is_dir():
            if is_dicom_folder(f):
                found.append(f)
            continue
        if not f.exists():  # a symlink loop or a link to nowhere: never skipped as "not an image"
            raise FileNotFoundError(f"{what} folder {folder}: {f} {path_problem(f)}")
        (found if image_suffix(f) else others).append(f)
    if others:
        raise ValueError(
            f"{what} folder {folder} holds files that are not images ({_SUPPORTED}): "
            + ", ".join(str(o) for o in others[:5])
            + ("..." if len(others) > 5 else "")
            + "; move them away"
        )
    if not found:
        raise ValueError(f"{what} folder {folder} holds no images ({_SUPPORTED})")
    return found


def _expand(inputs: Sequence[str | os.PathLike], what: str) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += [path] if is_dicom_folder(path) else list_images(path, what)
        elif not path.exists():
            raise FileNotFoundError(f"{what} {path} {path_problem(path)}")
        elif not image_suffix(path):
            raise ValueError(f"{what} {path} is not a supported image ({_SUPPORTED}); give scans or folders of them")
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def collect_cases(
    inputs: Sequence[str | os.PathLike], in_channels: int = 1, channel_names: Sequence[str] = (), what: str = "--input"
) -> list[Case]:
    """Cases from files/folders; with ``in_channels > 1`` files are grouped by nnU-Net channel naming.

    Raises:
        FileNotFoundError: a path does not exist. ValueError: unsupported files. DataError: channel files
        missing, extra or not named ``<case>_<dddd>``, or a DICOM folder given to a multi-channel model.
    """
    files = _expand(inputs, what)
    if in_channels == 1:
        return [Case(image_stem(f), (f,)) for f in files]
    names = f" ({', '.join(channel_names)})" if channel_names else ""
    groups: dict[str, dict[int, Path]] = {}
    for f in files:
        parsed = None if f.is_dir() else split_channel(image_stem(f))
        if parsed is None:
            raise DataError(
                f"{f}: the model takes {in_channels} channels{names}, one file per channel named "
                f"<case>_0000<ext> .. <case>_{in_channels - 1:04d}<ext> (nnU-Net); rename the files or give a "
                "folder of them"
            )
        case, index = parsed
        if index in groups.setdefault(case, {}):
            raise DataError(f"{f}: channel {index} of case {case!r} given twice (also {groups[case][index]})")
        groups[case][index] = f
    cases = []
    for case, chans in groups.items():
        missing = [i for i in range(in_channels) if i not in chans]
        extra = sorted(i for i in chans if i >= in_channels)
        if missing or extra:
            some = next(iter(chans.values()))
            problem = f"channel(s) {', '.join(f'{i:04d}' for i in missing)} missing" if missing else "too many channels"
            raise DataError(
                f"case {case!r} ({some.parent}): {problem}; the model takes {in_channels} channels{names}: "
                f"{case}_0000 .. {case}_{in_channels - 1:04d}"
                + (f" (found {', '.join(f'{i:04d}' for i in extra)})" if extra else "")
            )
        cases.append(Case(case, tuple(chans[i] for i in range(in_channels))))
    return cases
