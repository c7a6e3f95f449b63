"""ACDC challenge download -> the SSL4MIS h5 layout that the ``acdc`` loader reads.

Input (the official ACDC "database" download): ``patientXXX/`` folders (directly in RAW, or one level down,
e.g. ``training/`` and ``testing/``) with ``Info.cfg`` (``ED``, ``ES``, ``Group``, ``Height``, ``NbFrame``,
``Weight``), ``patientXXX_4d.nii.gz`` and the annotated ED/ES frames ``patientXXX_frameYY.nii.gz`` +
``patientXXX_frameYY_gt.nii.gz`` (labels 0 bg, 1 RV, 2 Myo, 3 LV).

Output (SSL4MIS, github.com/HiLab-git/SSL4MIS): ``data/<frame>.h5`` volumes (``image`` (Z, Y, X) float32
min-max normalised to [0, 1] per volume, ``label`` uint8), ``data/slices/<frame>_slice_<k>.h5`` (k from 1),
``train_slices.list``, ``train.list``, ``val.list``, ``test.list`` and ``conversion.json`` (provenance and each
patient's Info.cfg). SSL4MIS names the ED frame ``patientXXX_frame01`` and the ES frame
``patientXXX_frame02`` whatever their frame numbers (``frame_names="official"`` keeps the numbers).

Split: when RAW holds the 100 ACDC training patients, the standard SSL4MIS 70/10/20 lists (`lists.py`;
further patients, e.g. 101-150, are converted and listed in ``extra.list``); otherwise a seeded 70/10/20
split by patient.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import DataError, choice
from arco.data.convert._cases import find_cases, split_cases
from arco.data.convert.lists import ACDC_SLICE_ORDER, ACDC_TEST, ACDC_TRAIN, ACDC_VAL
from arco.data.io import check_image, check_label, read_image, write_h5
from arco.data.outdir import staged_dir
from arco.data.volume import normalize

__all__ = ["read_info_cfg", "find_acdc_patients", "acdc_split", "train_slice_rows", "convert_acdc"]

logger = logging.getLogger(__name__)


def read_info_cfg(path: str | os.PathLike) -> dict[str, Any]:
    """Parse an ACDC ``Info.cfg`` (``key: value`` lines); ED, ES and NbFrame become ints.

    Raises:
        DataError: missing file, a line without ``:``, or ED/ES missing or not integers.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Info.cfg not found; every ACDC patient folder has one (ED/ES frame numbers)")
    info: dict[str, Any] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(f"{path}: line {n} {line.strip()!r} is not 'key: value'; restore the file")
        key, value = (t.strip() for t in line.split(":", 1))
        info[key] = value
    for key in ("ED", "ES", "NbFrame"):
        if key in info:
            try:
                info[key] = int(float(info[key]))
            except ValueError:
                raise DataError(f"{path}: {key} is {info[key]!r}, expected a frame number") from None
    for key in ("Height", "Weight"):
        if key in info:
            try:
                info[key] = float(info[key])
            except ValueError:
                pass  # informative only
    missing = [k for k in ("ED", "ES") if k not in info]
    if missing:
        raise DataError(f"{path}: no {' and '.join(missing)} entry; Info.cfg must give the ED and ES frames")
    if info["ED"] == info["ES"]:
        raise DataError(f"{path}: ED and ES are both frame {info['ED']}; restore the file")
    return info


def find_acdc_patients(raw: Path) -> dict[str, Path]:
    """``patientXXX`` -> folder, for folders holding an ``Info.cfg`` in ``raw`` or one level below."""
    return find_cases(
        raw,
        "patient*/Info.cfg",
        "patient",
        "patientXXX/Info.cfg",
        "the ACDC 'database' folder of the official download (holding patientXXX/ folders, or training/ above them)",
    )


def acdc_split(patients: list[str], seed: int = 0) -> dict[str, list[str]]:
    """Patients per part: the SSL4MIS lists when all 100 standard patients are there (others -> ``extra``),
    else a seeded 70/10/20 split (at least one val and one test patient from 3 patients on)."""
    standard = {"train": ACDC_TRAIN, "val": ACDC_VAL, "test": ACDC_TEST}
    return split_cases(patients, standard, {"val": 0.1, "test": 0.2}, seed, minimum=3)


def _frame_names(pid: str, info: dict, frame_names: str) -> list[tuple[str, int, str]]:
    """``[(phase, frame number, output name)]`` for ED then ES."""
    out = []
    for i, phase in enumerate(("ED", "ES")):
        num = int(info[phase])
        name = f"{pid}_frame{i + 1:02d}" if frame_names == "ssl4mis" else f"{pid}_frame{num:02d}"
        out.append((phase, num, name))
    return out


def _convert_frame(folder: Path, pid: str, num: int, out_name: str, tmp: Path) -> int:
    img_path = folder / f"{pid}_frame{num:02d}.nii.gz"
    gt_path = folder / f"{pid}_frame{num:02d}_gt.nii.gz"
    for p in (img_path, gt_path):
        if not p.is_file():
            raise DataError(f"{p}: not found; Info.cfg of {pid} names frame {num} (ED/ES), which needs it")
    image = check_image(read_image(img_path)[0], img_path, 3)
    label = check_label(read_image(gt_path)[0], image.shape, gt_path, 4).astype(np.uint8)
    image = normalize(image, "minmax")  # SSL4MIS: (x - min) / (max - min) per volume
    write_h5(tmp / "data" / f"{out_name}.h5", image=image, label=label)
    for k in range(image.shape[0]):
        write_h5(tmp / "data" / "slices" / f"{out_name}_slice_{k + 1}.h5", image=image[k], label=label[k])
    return int(image.shape[0])


def train_slice_rows(train: list[str], frames: dict[str, list[str]], slices: dict[str, int], standard: bool) -> list:
    """Rows of ``train_slices.list``: every slice of the training frames, patient by patient; with the
    standard split each frame keeps SSL4MIS's slice order when its slice count matches that list."""
    rows = []
    for pid in train:
        for i, name in enumerate(frames[pid]):
            table = ACDC_SLICE_ORDER.get(f"{pid}_frame{i + 1:02d}") if standard else None
            order = table if table and sorted(table) == list(range(1, slices[name] + 1)) else None
            if standard and order is None:
                logger.warning("%s: %d slices, not as in the SSL4MIS list; slices listed in order", name, slices[name])
            rows += [f"{name}_slice_{k}" for k in (order or range(1, slices[name] + 1))]
    return rows


def convert_acdc(
    raw: str | os.PathLike,
    out: str | os.PathLike,
    overwrite: bool = False,
    frame_names: str = "ssl4mis",
    seed: int = 0,
) -> dict[str, Any]:
    """Convert the ACDC download under ``raw`` into the SSL4MIS layout under ``out`` (see the module doc).

    Returns a summary (patients per part, frames, slices, whether the standard lists were used).

    Raises:
        DataError: missing/corrupt Info.cfg, frame or label file (named). FileExistsError: ``out`` is not
        empty and ``overwrite`` is False. ValueError: ``out`` overlaps ``raw``.
    """
    choice("frame_names", frame_names, ("ssl4mis", "official"), "convert_acdc()")
    raw, out = Path(raw), Path(out)
    patients = find_acdc_patients(raw)
    infos = {pid: read_info_cfg(folder / "Info.cfg") for pid, folder in patients.items()}
    parts = acdc_split(list(patients), seed)
    standard = "extra" in parts
    frames: dict[str, list[str]] = {}
    slices: dict[str, int] = {}
    with staged_dir(out, overwrite, inputs=[raw]) as tmp:
        for pid, folder in patients.items():
            frames[pid] = []
            for _, num, name in _frame_names(pid, infos[pid], frame_names):
                slices[name] = _convert_frame(folder, pid, num, name, tmp)
                frames[pid].append(name)
        rows = train_slice_rows(parts["train"], frames, slices, standard)
        (tmp / "train_slices.list").write_text("\n".join(rows) + "\n")
        for part in ("train", "val", "test", "extra"):
            if part in parts and (part != "extra" or parts[part]):
                (tmp / f"{part}.list").write_text("".join(f"{f}\n" for p in parts[part] for f in frames[p]))
        summary = {
            "source": str(raw.resolve()),
            "layout": "ssl4mis",
            "split": "ssl4mis-standard" if standard else f"seeded-70/10/20 (seed {seed})",
            "frame_names": frame_names,
            **{part: len(ids) for part, ids in parts.items()},
            "frames": sum(len(v) for v in frames.values()),
            "train_slices": len(rows),
            "patients": {pid: {"folder": str(patients[pid]), **infos[pid], "frames": frames[pid]} for pid in patients},
        }
        (tmp / "conversion.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
