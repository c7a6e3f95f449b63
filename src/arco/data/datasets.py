"""Torch datasets over in-memory arrays: 2D slices and 3D random patches, weakly augmented per sample."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from arco.data.transforms import weak_2d, weak_3d

__all__ = ["SliceDataset", "PatchDataset", "slice_positions"]

_SLICE_ID = re.compile(r"^(?P<case>.+)_slice_(?P<k>\d+)$")


def slice_positions(ids: Sequence[str]) -> list[float] | None:
    """Where each slice lies in its volume, ``k / n`` for id ``<case>_slice_<k>`` with ``n`` the number of slices
    of that case among ``ids`` (pass every part of a split together: SSL4MIS' row split may cut a volume).
    ``None`` when an id does not follow that pattern (slices of unknown position)."""
    parsed = [_SLICE_ID.match(str(i)) for i in ids]
    if not parsed or any(m is None for m in parsed):
        return None
    count: dict[str, int] = {}
    for m in parsed:
        count[m["case"]] = max(count.get(m["case"], 0), int(m["k"]) + 1)
    return [int(m["k"]) / count[m["case"]] for m in parsed]


class SliceDataset(Dataset):
    """2D training slices resized to ``patch_size`` (and weakly augmented when ``augment``).

    Items: ``{"image": float32 (C, H, W), "label": int64 (H, W)}`` (no ``"label"`` when ``labels`` is None), plus
    ``"position"`` (float32 scalar, the slice's place in its volume, see :func:`slice_positions`) when
    ``positions`` are given; ``images[i]`` is ``(H, W)`` (C = 1) or ``(C, H, W)``. ``ids[i]`` names the slice
    (``<case>_slice_<k>``).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray] | None,
        ids: Sequence[str],
        patch_size: tuple[int, int],
        augment: bool = True,
        rotation: float = 20.0,
        max_zoom: float = 1.2,
        positions: Sequence[float] | None = None,
    ) -> None:
        self.images, self.labels, self.ids = list(images), None if labels is None else list(labels), list(ids)
        self.positions = None if positions is None else [float(p) for p in positions]
        self.patch_size, self.augment, self.rotation, self.max_zoom = (
            tuple(patch_size),
            augment,
            rotation,
            max_zoom,
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        lab = None if self.labels is None else self.labels[i]
        img, lab_t = weak_2d(self.images[i], lab, self.patch_size, self.augment, self.rotation, self.max_zoom)
        item = {"image": img} if lab_t is None else {"image": img, "label": lab_t}
        if self.positions is not None:
            item["position"] = torch.tensor(self.positions[i], dtype=torch.float32)
        return item


class PatchDataset(Dataset):
    """3D training volumes ``(D, H, W)`` or ``(C, D, H, W)``; each item is a random ``patch_size`` crop
    ``(C, *patch)`` (rot90/flip when ``augment``, the same for every channel).

    ``repeats`` makes one epoch visit every volume several times (3D datasets have few cases).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray] | None,
        ids: Sequence[str],
        patch_size: tuple[int, int, int],
        augment: bool = True,
        repeats: int = 1,
    ) -> None:
        self.images, self.labels, self.ids = list(images), None if labels is None else list(labels), list(ids)
        self.patch_size, self.augment, self.repeats = tuple(patch_size), augment, max(1, int(repeats))

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = i % len(self.images)
        lab = None if self.labels is None else self.labels[j]
        img, lab_t = weak_3d(self.images[j], lab, self.patch_size, self.augment)
        return {"image": img} if lab_t is None else {"image": img, "label": lab_t}
