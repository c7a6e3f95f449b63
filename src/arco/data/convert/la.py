"""2018 Atrial Segmentation Challenge download -> the UA-MT h5 layout that the ``la`` loader reads.

Input: ``<case>/lgemri.nrrd`` (LGE-MRI) + ``<case>/laendo.nrrd`` (left-atrium cavity, 255 = LA) folders,
directly in RAW or one level down (e.g. ``Training Set/``).

Output (UA-MT, github.com/yulequan/UA-MT ``code/dataloaders/la_heart_processing.py``):
``2018LA_Seg_Training Set/<case>/mri_norm2.h5`` with ``image`` float32 and ``label`` uint8 0/1, both in the
NRRD axis order (X, Y, Z) as ``pynrrd`` reads it, plus ``train.list``, ``test.list`` and ``conversion.json``
(crop box and spacing of every case, so predictions can be placed back on the original grid).
UA-MT's preprocessing, step by step: label = (laendo == 255); image z-scored over the whole volume
(population std); then a crop in X and Y only (Z is kept whole) around the label's bounding box, padded by
half the shortfall to 112 voxels per axis plus a random margin of 10-19 voxels per side, clipped to the
volume. UA-MT draws the margins from the unseeded global RNG; here they come from a generator seeded by
``seed`` and the case id, so a conversion is reproducible.

Split: the UA-MT 80/20 lists when RAW holds its 100 cases (others -> ``extra.list``), else a seeded 80/20
split.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import DataError
from arco.data.convert._cases import find_cases, split_cases
from arco.data.convert.lists import LA_TEST, LA_TRAIN
from arco.data.io import check_image, read_image, write_h5
from arco.data.outdir import staged_dir

__all__ = ["UAMT_PATCH", "find_la_cases", "la_split", "uamt_crop", "convert_la"]

#: UA-MT output_size (x, y, z): the crop reaches at least this size in X and Y when the volume allows.
UAMT_PATCH = (112, 112, 80)
SUBDIR = "2018LA_Seg_Training Set"


def find_la_cases(raw: Path) -> dict[str, Path]:
    """Case id -> folder holding ``lgemri.nrrd``, in ``raw`` or one level below."""
    return find_cases(raw, "*/lgemri.nrrd", "case", "<case>/lgemri.nrrd", "the 2018 LA challenge training folder")


def la_split(cases: list[str], seed: int = 0) -> dict[str, list[str]]:
    """UA-MT's lists when all its 100 cases are there (others -> ``extra``), else a seeded 80/20 split."""
    return split_cases(cases, {"train": LA_TRAIN, "test": LA_TEST}, {"test": 0.2}, seed, minimum=2)


def uamt_crop(label_xyz: np.ndarray, rng: np.random.Generator) -> tuple[slice, slice]:
    """UA-MT's X/Y crop around the label bounding box (see the module doc); ``label_xyz`` must be non-empty."""
    w, h, _ = label_xyz.shape
    nz = np.nonzero(label_xyz)
    (minx, maxx), (miny, maxy), (minz, maxz) = ((int(a.min()), int(a.max())) for a in nz)
    px = max(UAMT_PATCH[0] - (maxx - minx), 0) // 2
    py = max(UAMT_PATCH[1] - (maxy - miny), 0) // 2
    m = rng.integers(10, 20, size=4)  # UA-MT: np.random.randint(10, 20) per side of X and Y
    rng.integers(5, 10, size=2)  # UA-MT also draws Z margins, which its crop never uses
    x0, x1 = max(minx - int(m[0]) - px, 0), min(maxx + int(m[1]) + px, w)
    y0, y1 = max(miny - int(m[2]) - py, 0), min(maxy + int(m[3]) + py, h)
    return slice(x0, x1), slice(y0, y1)


def _read_pair(folder: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    img_path, lab_path = folder / "lgemri.nrrd", folder / "laendo.nrrd"
    if not lab_path.is_file():
        raise DataError(f"{lab_path}: not found; every LA case needs the laendo.nrrd label beside lgemri.nrrd")
    image, _, spacing = read_image(img_path)
    label, _, _ = read_image(lab_path)
    image = check_image(image, img_path, 3).T  # (Z, Y, X) -> UA-MT's (X, Y, Z)
    label = np.asarray(label).T
    if label.shape != image.shape:
        raise DataError(f"{lab_path}: shape {label.shape[::-1]} differs from {img_path} {image.shape[::-1]}")
    values = set(np.unique(label).tolist())
    if not values <= {0, 255} and not values <= {0, 1}:
        raise DataError(f"{lab_path}: label values {sorted(values)[:6]}; expected 0/255 (LA challenge) or 0/1")
    label = (label == (255 if 255 in values else 1)).astype(np.uint8)
    if not label.any():
        raise DataError(f"{lab_path}: empty label; UA-MT crops around the atrium, so every case needs one")
    return image, label, spacing[::-1]


def convert_la(raw: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, seed: int = 0) -> dict:
    """Convert the LA challenge download under ``raw`` into the UA-MT layout under ``out`` (module doc).

    Raises:
        DataError: missing/corrupt image or label (named), empty label. FileExistsError: ``out`` is not empty
        and ``overwrite`` is False. ValueError: ``out`` overlaps ``raw``.
    """
    raw, out = Path(raw), Path(out)
    cases = find_la_cases(raw)
    parts = la_split(list(cases), seed)
    info: dict[str, Any] = {}
    with staged_dir(out, overwrite, inputs=[raw]) as tmp:
        for case, folder in cases.items():
            image, label, spacing_xyz = _read_pair(folder)
            image = image.astype(np.float64)  # UA-MT z-scores the raw array in float64, before the crop
            image = ((image - image.mean()) / image.std()).astype(np.float32)
            sx, sy = uamt_crop(label, np.random.default_rng([seed, zlib.crc32(case.encode())]))
            write_h5(tmp / SUBDIR / case / "mri_norm2.h5", image=image[sx, sy], label=label[sx, sy])
            info[case] = {
                "folder": str(folder),
                "shape_xyz": list(image.shape),
                "spacing_xyz": list(spacing_xyz),
                "crop_xyz": [[sx.start, sx.stop], [sy.start, sy.stop], [0, image.shape[2]]],
            }
        for part, ids in parts.items():
            if part != "extra" or ids:
                (tmp / f"{part}.list").write_text("".join(f"{c}\n" for c in ids))
        summary = {
            "source": str(raw.resolve()),
            "layout": "ua-mt",
            "split": "ua-mt-standard" if "extra" in parts else f"seeded-80/20 (seed {seed})",
            **{part: len(ids) for part, ids in parts.items()},
            "cases": info,
        }
        (tmp / "conversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
