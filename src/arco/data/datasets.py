"""Torch datasets over in-memory arrays: 2D slices and 3D random patches, weakly augmented per sample."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from arco.data.transforms import weak_2d, weak_3d

__all__ = ["SliceDataset", "PatchDataset"]


class SliceDataset(Dataset):
    """2D training slices resized to ``patch_size`` (and weakly augmented when ``augment``).

    Items: ``{"image": float32 (C, H, W), "label": int64 (H, W)}`` (no ``"label"`` when ``labels`` is None);
    ``images[i]`` is ``(H, W)`` (C = 1) or ``(C, H, W)``. ``ids[i]`` names the slice (``<case>_slice_<k>``).
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
    ) -> None:
        self.images, self.labels, self.ids = list(images), None if labels is None else list(labels), list(ids)
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
        return {"image": img} if lab_t is None else {"image": img, "label": lab_t}


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
