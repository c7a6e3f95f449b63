"""Augmentation.

Per sample (inside the datasets, CPU): `weak_2d` (one affine warp = rotation + zoom-crop + horizontal flip,
then the
network size) and `weak_3d` (random crop + rot90 in-plane + flip), image and label moved together, labels
nearest.
Randomness comes from torch's default generator, which `DataLoader` seeds per worker.
A single `grid_sample` per sample keeps the 2D weak augmentation well under 1 ms at 128x128 (MONAI's
RandRotated + RandSpatialCropd + RandFlipd chain resamples three times and costs several ms on a 2-core CPU).

The batched, device-side augmentations that methods apply to a whole batch (CutMix, colour jitter, blur) live in
:mod:`arco.augment`, below the methods; this module is for the data loaders.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["weak_2d", "weak_3d", "resize_2d"]


def weak_2d(
    image: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor | None,
    patch_size: tuple[int, int],
    augment: bool = True,
    rotation: float = 20.0,
    max_zoom: float = 1.2,
    flip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weakly augment one 2D slice and bring it to ``patch_size``.

    Args:
        image: ``(H, W)`` float slice, or ``(C, H, W)`` with channels (all channels get the same warp);
            label: ``(H, W)`` integer map or None.
        patch_size: output ``(h, w)``; the slice is resized to it (as SSL4MIS zooms ACDC slices to 256x256).
        augment: False gives the plain resize (identity when the size already matches).
        rotation: maximal angle in degrees (uniform in [-rotation, rotation]).
        max_zoom: zoom in [1, max_zoom] with a random offset that keeps the crop inside the slice.
        flip: horizontal flip with probability 0.5.

    Returns:
        ``(image (C, h, w) float32 (C = 1 for a 2D input), label (h, w) int64 | None)``.
    """
    img = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image).float()
    img = img[None] if img.dim() == 2 else img  # (C, H, W)
    lab = None if label is None else torch.as_tensor(np.asarray(label) if isinstance(label, np.ndarray) else label)
    h, w = int(patch_size[0]), int(patch_size[1])
    if not augment:
        if tuple(img.shape[1:]) == (h, w):
            return img.clone(), None if lab is None else lab.long().clone()
        out = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if lab is None:
            return out, None
        lab_out = F.interpolate(lab[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        return out, lab_out
    r = torch.rand(5)
    angle = math.radians(rotation) * (2 * float(r[0]) - 1)
    zoom = 1.0 + (max_zoom - 1.0) * float(r[1])
    tx, ty = (2 * float(r[2]) - 1) * (1 - 1 / zoom), (2 * float(r[3]) - 1) * (1 - 1 / zoom)
    sx = -1.0 if (flip and float(r[4]) < 0.5) else 1.0
    c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
    a = h / w  # rotate in output pixel units, not in normalised coordinates (no shear for h != w)
    theta = torch.tensor([[[c * sx, -s * a, tx], [s * sx / a, c, ty]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    if lab is None:
        return out, None
    lab_out = F.grid_sample(lab[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, lab_out[0, 0].long()


def resize_2d(image: np.ndarray, label: np.ndarray | None, patch_size: tuple[int, int]):
    """Plain resize of a slice to ``patch_size`` (bilinear image, nearest label); see `weak_2d`."""
    return weak_2d(image, label, patch_size, augment=False)


def weak_3d(
    image: np.ndarray,
    label: np.ndarray | None,
    patch_size: tuple[int, int, int],
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random crop of ``patch_size`` from a ``(D, H, W)`` or ``(C, D, H, W)`` volume (zero-padded when
    smaller), then, when ``augment``, a random rot90 in the (H, W) plane and a flip along a random axis (UA-MT
    RandomRotFlip); every channel gets the same crop, rotation and flip.

    Returns ``(image (C, *patch) float32 (C = 1 for a 3D input), label (*patch) int64 | None)``.
    """
    image = np.asarray(image)
    image = image[None] if image.ndim == 3 else image  # (C, D, H, W)
    pad = [(max(0, p - s) // 2, max(0, p - s) - max(0, p - s) // 2) for p, s in zip(patch_size, image.shape[1:])]
    if any(a or b for a, b in pad):
        image = np.pad(image, [(0, 0), *pad])
        label = None if label is None else np.pad(label, pad)
    r = torch.rand(6)
    starts = [int(float(r[i]) * (s - p + 1)) for i, (s, p) in enumerate(zip(image.shape[1:], patch_size))]
    sl = tuple(slice(a, a + p) for a, p in zip(starts, patch_size))
    img, lab = image[(slice(None), *sl)], None if label is None else label[sl]
    if augment:
        k = int(float(r[3]) * 4) % 4
        if patch_size[1] != patch_size[2]:
            k = 2 * (k % 2)
        axis = int(float(r[4]) * 3) % 3
        img = np.flip(np.rot90(img, k, axes=(2, 3)), axis + 1)
        lab = None if lab is None else np.flip(np.rot90(lab, k, axes=(1, 2)), axis)
    out = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    return out, None if lab is None else torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))
