"""Torch datasets and volumes that read preprocessed cases lazily (memory-mapped ``.npy``, one patch per item).

Each item opens the case's arrays with ``np.load(mmap_mode="r")``, copies out one 2D slice or one 3D patch and
drops the mapping, so neither the main process nor a DataLoader worker holds more than a patch (the kernel's page
cache does the rest). The datasets hold only paths and small per-case tables: they pickle cheaply into workers.

Foreground oversampling (nnU-Net): a fraction ``oversample`` of labeled items is centred on a foreground voxel
drawn from the locations stored at preprocessing (a class present in the case, then one of its voxels).
Unlabeled items never use those locations (that would leak labels into the unlabeled stream). Randomness comes
from torch's global generator, which the engine seeds per item (`arco.engine.BatchStream`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from arco.data.transforms import weak_2d, weak_3d
from arco.data.volume import Volume

__all__ = ["open_array", "read_box", "CaseTable", "LazyVolume", "LazySliceDataset", "LazyPatchDataset"]


def open_array(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only (the single place the lazy readers touch the disk)."""
    return np.load(path, mmap_mode="r")


def read_box(arr: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Copy ``arr[..., start:start+size]`` over the last ``len(size)`` axes into a new array; parts of the box
    outside ``arr`` are zero (padding for patches larger than the case or at its border)."""
    lead = arr.ndim - len(size)
    out = np.zeros((*arr.shape[:lead], *size), dtype=arr.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for a, p, n in zip(start, size, arr.shape[lead:]):
        lo, hi = max(a, 0), min(a + p, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    out[tuple(dst)] = arr[tuple(src)]
    return out


class CaseTable:
    """Paths, shapes ``(C, Z, Y, X)`` and foreground-location counts per class of some preprocessed cases."""

    def __init__(self, root: str | os.PathLike, entries: Sequence[dict[str, Any]]) -> None:
        base = Path(root) / "cases"
        self.ids = [e["case_id"] for e in entries]
        self.image = [str(base / e["image"]) for e in entries]
        self.label = [str(base / e["label"]) for e in entries]
        self.locations = [str(base / e["locations"]) for e in entries]
        self.shapes = np.asarray([e["shape"] for e in entries], dtype=np.int64).reshape(-1, 4)
        counts = [e["class_locations"] for e in entries]
        width = max((len(c) for c in counts), default=1)
        self.counts = np.zeros((len(entries), width), dtype=np.int64)
        for i, c in enumerate(counts):
            self.counts[i, : len(c)] = c

    def __len__(self) -> int:
        return len(self.ids)

    def foreground_voxel(self, case: int) -> np.ndarray | None:
        """A stored foreground voxel ``(z, y, x)`` of ``case``: a uniform class among those present, then a
        uniform one of its stored voxels; None when the case has no foreground."""
        counts = self.counts[case]
        present = np.flatnonzero(counts)
        if present.size == 0:
            return None
        c = int(present[int(torch.randint(present.size, (1,)))])
        row = int(counts[:c].sum()) + int(torch.randint(int(counts[c]), (1,)))
        return np.asarray(open_array(self.locations[case])[row, 1:], dtype=np.int64)


class LazyVolume(Volume):
    """A `Volume` whose ``image`` ``(Z, Y, X)`` (channel 0) and ``label`` are memory-mapped on every access.

    Nothing is read until a consumer indexes the arrays, and the mapping is released with the returned array, so
    a list of these costs a few hundred bytes per case. ``image`` has the stored dtype (float32 or float16) and
    ``label`` is uint8: cast a slice, not the whole case, when another dtype is needed.
    """

    def __init__(
        self,
        case_id: str,
        image_path: str,
        label_path: str | None,
        shape: Sequence[int],
        spacing: Sequence[float] | None,
        affine: np.ndarray | None,
        source: str | None,
    ) -> None:
        # Not the dataclass __init__: image and label are properties here.
        self.case_id, self.spacing, self.affine, self.source = case_id, tuple(spacing or ()) or None, affine, source
        self._image_path, self._label_path, self._shape = image_path, label_path, tuple(int(s) for s in shape)

    @property
    def image(self) -> np.ndarray:  # type: ignore[override]
        return open_array(self._image_path)[0]

    @property
    def label(self) -> np.ndarray | None:  # type: ignore[override]
        return None if self._label_path is None else open_array(self._label_path)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def __repr__(self) -> str:
        return f"LazyVolume({self.case_id!r}, shape={self._shape}, image={self._image_path!r})"


class _LazyDataset(Dataset):
    def __init__(self, table: CaseTable, with_label: bool, patch_size: Sequence[int], augment: bool, oversample: float):
        self.table, self.with_label = table, with_label
        self.patch_size, self.augment = tuple(int(p) for p in patch_size), augment
        self.oversample = float(oversample) if with_label else 0.0

    def _use_foreground(self) -> bool:
        return self.oversample > 0 and float(torch.rand(())) < self.oversample

    def _pack(self, img: torch.Tensor, lab: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"image": img} if not self.with_label else {"image": img, "label": lab}


class LazySliceDataset(_LazyDataset):
    """2D items: every slice (axis Z) of the cases, resized/augmented like `arco.data.datasets.SliceDataset`.

    Items: ``{"image": float32 (1, H, W), "label": int64 (H, W)}`` (no label when ``with_label`` is False). With
    probability ``oversample`` a labeled item reads instead the slice of a stored foreground voxel of its case.
    """

    def __init__(
        self,
        table: CaseTable,
        with_label: bool,
        patch_size: tuple[int, int],
        augment: bool = True,
        rotation: float = 20.0,
        max_zoom: float = 1.2,
        oversample: float = 0.33,
    ) -> None:
        super().__init__(table, with_label, patch_size, augment, oversample)
        self.rotation, self.max_zoom = rotation, max_zoom
        depth = table.shapes[:, 1]
        self.case_of = np.repeat(np.arange(len(table)), depth).astype(np.int32)
        self.slice_of = (np.arange(int(depth.sum())) - np.repeat(np.cumsum(depth) - depth, depth)).astype(np.int32)

    def __len__(self) -> int:
        return int(self.case_of.size)

    @property
    def ids(self) -> list[str]:
        return [f"{self.table.ids[c]}_slice_{z}" for c, z in zip(self.case_of, self.slice_of)]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        case, z = int(self.case_of[i]), int(self.slice_of[i])
        if self._use_foreground():
            voxel = self.table.foreground_voxel(case)
            z = z if voxel is None else int(voxel[0])
        image = np.array(open_array(self.table.image[case])[0, z], dtype=np.float32)  # a copy: drops the map
        label = np.array(open_array(self.table.label[case])[z]) if self.with_label else None
        img, lab = weak_2d(image, label, self.patch_size, self.augment, self.rotation, self.max_zoom)
        return self._pack(img, lab)


class LazyPatchDataset(_LazyDataset):
    """3D items: a random ``patch_size`` box of a case (zero-padded where it leaves the case), then rot90/flip
    like `arco.data.datasets.PatchDataset`; a fraction ``oversample`` of labeled items is centred on a stored
    foreground voxel (nnU-Net). ``repeats`` visits every case several times per epoch."""

    def __init__(
        self,
        table: CaseTable,
        with_label: bool,
        patch_size: tuple[int, int, int],
        augment: bool = True,
        oversample: float = 0.33,
        repeats: int = 1,
    ) -> None:
        super().__init__(table, with_label, patch_size, augment, oversample)
        self.repeats = max(1, int(repeats))

    def __len__(self) -> int:
        return len(self.table) * self.repeats

    def patch_start(self, case: int) -> list[int]:
        """Corner of the next patch of ``case``: uniform over the boxes that overlap the case as much as possible,
        or centred on a foreground voxel (clipped to the same range) for an oversampled item."""
        shape, patch = self.table.shapes[case, 1:], self.patch_size
        lo = [min(0, int(s) - p) for s, p in zip(shape, patch)]
        hi = [max(0, int(s) - p) for s, p in zip(shape, patch)]
        voxel = self.table.foreground_voxel(case) if self._use_foreground() else None
        if voxel is not None:
            return [min(max(int(v) - p // 2, a), b) for v, p, a, b in zip(voxel, patch, lo, hi)]
        r = torch.rand(3)
        return [a + int(float(r[k]) * (b - a + 1)) for k, (a, b) in enumerate(zip(lo, hi))]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        case = i % len(self.table)
        start = self.patch_start(case)
        image = read_box(open_array(self.table.image[case]), start, self.patch_size)[0].astype(np.float32)
        label = read_box(open_array(self.table.label[case]), start, self.patch_size) if self.with_label else None
        img, lab = weak_3d(image, label, self.patch_size, self.augment)
        return self._pack(img, lab)
