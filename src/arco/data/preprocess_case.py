"""One case of `arco data preprocess`: crop, normalise, resample, sample foreground locations, write atomically.

`process_case` runs in worker processes; it takes and returns plain dicts (picklable) and writes
``cases/<case>_{image,label,locations}.npy`` then ``cases/<case>.json`` last, which marks the case complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import DataError
from arco._io import atomic_path, atomic_write_text
from arco.data.fingerprint import file_fingerprint
from arco.data.io import check_label, read_nifti, read_scan
from arco.data.resample import bounding_box, check_spacing, grid_affine, resample_image, resample_label, target_shape
from arco.data.volume import normalize

__all__ = ["VERSION", "CT_BODY_HU", "PreprocessSettings", "class_locations", "process_case"]

logger = logging.getLogger(__name__)

VERSION = 1  # of the on-disk format (docs/design.md); part of every settings key
CT_BODY_HU = -500.0  # air and lung lie below, soft tissue and bone above: the body box of a CT scan
# nnU-Net (DefaultPreprocessor._sample_foreground_locations): 10 000 voxels per class, at least 1 % of them.
LOCATIONS_MIN_FRACTION = 0.01


@dataclass(frozen=True)
class PreprocessSettings:
    """What preprocessing does; a change of any field redoes every case.

    Attributes:
        spacing: target spacing ``(Z, Y, X)`` mm, or None to keep each case's own grid (no resampling).
        normalization: ``ct`` (clip to ``ct_window`` HU, scale to [0, 1]), ``zscore`` (per case and channel),
            ``minmax`` or ``none``, applied after cropping and before resampling (as nnU-Net).
        ct_window: HU window of ``ct``.
        crop: ``body`` (box of the voxels above ``body_threshold``; CT: -500 HU, otherwise the non-zero voxels as
            nnU-Net's crop-to-nonzero), ``foreground`` (box of the label + ``margin``; uses the ground truth, so
            test cases get cropped around it, as the LA UA-MT preprocessing) or ``none``.
        margin: voxels added around the crop box.
        body_threshold: intensity threshold of ``body`` (None = the rule above).
        dtype: storage dtype of images, ``float32`` or ``float16`` (half the disk and page cache).
        locations: foreground voxels sampled per class and case (nnU-Net: 10 000, at least 1 %).
        class_names: from ``dataset.json`` (a changed label map redoes everything).
    """

    spacing: tuple[float, float, float] | None
    normalization: str
    ct_window: tuple[float, float]
    crop: str
    margin: int
    body_threshold: float | None
    dtype: str
    locations: int
    class_names: tuple[str, ...]

    def key(self) -> str:
        """Short hash of the settings (stored with every case)."""
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def class_locations(label: np.ndarray, num_classes: int, num: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Sample foreground voxels per class (nnU-Net rule: ``min(n, max(num, ceil(0.01 n)))`` of the ``n`` voxels).

    Returns ``(locations int32 (N, 4) rows (class, z, y, x) grouped by class, counts per class 0..C-1)``;
    class 0 (background) is not sampled.
    """
    rng = np.random.default_rng(seed)
    flat = label.reshape(-1)
    rows, counts = [], [0]
    for c in range(1, num_classes):  # one pass per class over the case: preprocessing, not a hot path
        idx = np.flatnonzero(flat == c)
        k = min(idx.size, max(num, math.ceil(LOCATIONS_MIN_FRACTION * idx.size)))
        pick = np.sort(idx[rng.choice(idx.size, k, replace=False)]) if k else idx[:0]
        coords = np.stack(np.unravel_index(pick, label.shape), axis=1)
        rows.append(np.concatenate([np.full((k, 1), c), coords], axis=1).astype(np.int32))
        counts.append(int(k))
    locs = np.concatenate(rows) if rows else np.zeros((0, 4), np.int32)
    return locs, counts


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr))


def _crop_box(image: np.ndarray, label: np.ndarray, s: PreprocessSettings, source: Path) -> tuple:
    if s.crop == "none":
        return tuple((0, n) for n in image.shape), ""
    if s.crop == "foreground":
        box = bounding_box(label > 0, s.margin)
        if box is not None:
            return box, ""
        note = "empty label, cropped to the body instead"
    else:
        note = ""
    if s.body_threshold is not None:
        mask = image > s.body_threshold
    else:
        mask = image > CT_BODY_HU if s.normalization == "ct" else image != 0
    box = bounding_box(mask, s.margin)
    if box is None:
        logger.warning("%s: no voxel above the body threshold; the case is kept uncropped", source)
        return tuple((0, n) for n in image.shape), "empty body mask, not cropped"
    return box, note


def process_case(task: dict[str, Any]) -> dict[str, Any]:
    """Preprocess one case (runs in a worker process); returns its index entry."""
    t0 = time.perf_counter()
    case, img_path, lab_path, out = task["case"], Path(task["image"]), Path(task["label"]), Path(task["out"])
    s = PreprocessSettings(**task["settings"])
    fingerprint = {"image": file_fingerprint(img_path, task["hash"]), "label": file_fingerprint(lab_path, task["hash"])}
    vol = read_scan(img_path, "none")
    spacing = check_spacing(vol.spacing, f"{img_path}: header pixdim", DataError)
    lab_raw, lab_affine, _ = read_nifti(lab_path)
    n_cls = len(s.class_names)
    label = check_label(lab_raw[None] if lab_raw.ndim == 2 else lab_raw, vol.image.shape, lab_path, n_cls)
    if not np.allclose(lab_affine, vol.affine, atol=1e-3, rtol=1e-4):
        raise DataError(f"{lab_path}: affine differs from its image {img_path}; the label must be on the image grid")
    label = label.astype(np.uint8 if n_cls <= 256 else np.uint16)
    box, note = _crop_box(vol.image, label, s, img_path)
    sl = tuple(slice(a, b) for a, b in box)
    image = normalize(vol.image[sl], s.normalization, s.ct_window)
    label = label[sl]
    cropped = image.shape
    new_shape = cropped if s.spacing is None else target_shape(cropped, spacing, s.spacing)
    image = resample_image(image, new_shape, spacing)
    label = resample_label(label, new_shape)
    seed = int.from_bytes(hashlib.blake2b(case.encode(), digest_size=8).digest(), "little")
    locs, loc_counts = class_locations(label, n_cls, s.locations, seed)
    names = {k: f"{case}_{k}.npy" for k in ("image", "label", "locations")}
    cases_dir = out / "cases"
    _save_npy(cases_dir / names["image"], image[None].astype(s.dtype))
    _save_npy(cases_dir / names["label"], label)
    _save_npy(cases_dir / names["locations"], locs)
    entry = {
        "case_id": case,
        "part": task["part"],
        **names,
        "shape": [1, *map(int, new_shape)],
        "dtype": s.dtype,
        # the grid's real spacing: the target up to the rounding of the shape (nnU-Net stores the target)
        "spacing": [round(c * sp / n, 6) for c, sp, n in zip(cropped, spacing, new_shape)],
        "affine": grid_affine(vol.affine, box, cropped, new_shape).tolist(),
        "original": {"shape": list(vol.image.shape), "spacing": list(spacing), "affine": vol.affine.tolist()},
        "crop_box": [list(b) for b in box],
        "cropped_shape": list(cropped),
        "crop_note": note,
        "class_voxels": np.bincount(label.reshape(-1), minlength=n_cls)[:n_cls].tolist(),
        "class_locations": loc_counts,
        "intensity": {k: float(getattr(image, k)()) for k in ("min", "max", "mean", "std")},
        "source": {"image": str(img_path), "label": str(lab_path)},
        "fingerprint": fingerprint,
        "settings_key": s.key(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_text(cases_dir / f"{case}.json", json.dumps(entry, indent=1))  # last: marks the case complete
    return entry
