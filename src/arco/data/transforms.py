"""Augmentation.

Per sample (inside the datasets, CPU): `weak_2d` (one affine warp = rotation + zoom-crop + horizontal flip,
then the
network size) and `weak_3d` (random crop + rot90 in-plane + flip), image and label moved together, labels
nearest.
Randomness comes from torch's default generator, which `DataLoader` seeds per worker.
A single `grid_sample` per sample keeps the 2D weak augmentation well under 1 ms at 128x128 (MONAI's
RandRotated + RandSpatialCropd + RandFlipd chain resamples three times and costs several ms on a 2-core CPU).

Batched, device-side (stage 2 strong view, no Python loop over the batch): `cutmix`, `color_jitter`,
`gaussian_blur`; inputs ``(B, C, *S)`` with ``S`` 2D or 3D, randomness from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["weak_2d", "weak_3d", "resize_2d", "cutmix", "color_jitter", "gaussian_blur"]


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gdev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gdev).to(device)


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


def _box_mask(shape: tuple[int, ...], generator, device, area: tuple[float, float]) -> torch.Tensor:
    """One random axis-aligned box per batch item: bool ``(B, *S)``; box volume fraction uniform in
    ``area``."""
    b, spatial = shape[0], shape[1:]
    nd = len(spatial)
    r = _rand(b * (1 + 2 * nd), generator, device).view(b, 1 + 2 * nd)
    frac = area[0] + (area[1] - area[0]) * r[:, 0]
    side = frac ** (1.0 / nd)  # equal relative side per axis
    mask = torch.ones((b, *spatial), dtype=torch.bool, device=device)
    for ax, n in enumerate(spatial):  # loop over spatial axes (2 or 3), not over the batch
        length = (side * n).round().clamp(1, n)
        start = (r[:, 1 + ax] * (n - length + 1)).floor()
        coord = torch.arange(n, device=device, dtype=torch.float32)
        inside = (coord[None] >= start[:, None]) & (coord[None] < (start + length)[:, None])
        view = [b] + [1] * nd
        view[1 + ax] = n
        mask &= inside.view(view)
    return mask


def cutmix(
    image: torch.Tensor,
    *targets: torch.Tensor,
    generator: torch.Generator | None = None,
    p: float = 1.0,
    area: tuple[float, float] = (0.25, 0.5),
) -> tuple[torch.Tensor, ...]:
    """CutMix inside a batch: for each item (with probability ``p``) paste a random box taken from another
    item.

    The same boxes and the same partner permutation are applied to ``image (B, C, *S)`` and to every target
    ``(B, *S)`` (pseudo-label, confidence, ...), so pasted pixels keep their own labels.

    Returns:
        ``(image, *targets)`` mixed (new tensors; inputs untouched).

    Example:
        >>> x = torch.arange(2.).view(2, 1, 1, 1).expand(2, 1, 8, 8); y = x[:, 0].long()
        >>> xm, ym = cutmix(x, y, generator=torch.Generator().manual_seed(0))
        >>> bool((xm[:, 0].long() == ym).all())
        True
    """
    if image.dim() not in (4, 5):
        raise ValueError(f"cutmix(): image must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(image.shape)}")
    spatial = tuple(image.shape[2:])
    for t in targets:
        if tuple(t.shape) != (image.shape[0], *spatial):
            raise ValueError(
                f"cutmix(): each target must have shape {(image.shape[0], *spatial)}, got {tuple(t.shape)}"
            )
    b, device = image.shape[0], image.device
    gdev = generator.device if generator is not None else device
    perm = torch.randperm(b, generator=generator, device=gdev).to(device)
    mask = _box_mask((b, *spatial), generator, device, area)
    mask &= (_rand(b, generator, device) < p).view(b, *([1] * len(spatial)))
    out = [torch.where(mask[:, None], image[perm], image)]
    out += [torch.where(mask, t[perm], t) for t in targets]
    return tuple(out)


def color_jitter(
    image: torch.Tensor,
    generator: torch.Generator | None = None,
    brightness: float = 0.2,
    contrast: float = 0.2,
    gamma: tuple[float, float] = (0.7, 1.5),
    p: float = 0.8,
) -> torch.Tensor:
    """Per-item random brightness (additive, x range), contrast (about the mean) and gamma, each item with
    probability ``p``. Works for any intensity range: gamma is applied on each channel's [min, max] rescaled to
    [0, 1] (channels such as T2 and ADC have their own ranges); the random factors are shared by the channels
    of an item."""
    b, nd = image.shape[0], image.dim() - 1
    dims = tuple(range(2, image.dim()))
    r = _rand(4 * b, generator, image.device).view(4, b, *([1] * nd)).to(image.dtype)
    on = r[3] < p
    lo, hi = image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    g = gamma[0] + (gamma[1] - gamma[0]) * r[0]
    x = ((image - lo) / span).clamp(0, 1) ** g
    mean = x.mean(dim=dims, keepdim=True)
    x = (x - mean) * (1 + contrast * (2 * r[1] - 1)) + mean + brightness * (2 * r[2] - 1)
    return torch.where(on, x * span + lo, image)


def gaussian_blur(
    image: torch.Tensor,
    generator: torch.Generator | None = None,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
) -> torch.Tensor:
    """Per-item Gaussian blur with sigma uniform in ``sigma`` (pixels), each item with probability ``p``.

    Separable grouped convolutions (one kernel per item), reflect padding; 2D or 3D ``(B, C, *S)``.
    """
    b, c = image.shape[:2]
    nd = image.dim() - 2
    r = _rand(2 * b, generator, image.device).view(2, b)
    s = sigma[0] + (sigma[1] - sigma[0]) * r[0]
    s = torch.where(r[1] < p, s, torch.full_like(s, 1e-3)).clamp_min(1e-3)
    radius = int(math.ceil(3 * sigma[1]))
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    k = torch.exp(-(x[None] ** 2) / (2 * s[:, None].to(image.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    conv = F.conv2d if nd == 2 else F.conv3d
    out = image.reshape(1, b * c, *image.shape[2:])
    for ax in range(nd):
        shape = [b * c, 1] + [1] * nd
        shape[2 + ax] = 2 * radius + 1
        pad = [0, 0] * nd
        pad[2 * (nd - 1 - ax)] = pad[2 * (nd - 1 - ax) + 1] = min(radius, image.shape[2 + ax] - 1)
        xp = F.pad(out, pad, mode="reflect")
        if pad[2 * (nd - 1 - ax)] < radius:  # tiny axis: fall back to zero padding for the rest
            extra = radius - pad[2 * (nd - 1 - ax)]
            zp = [0, 0] * nd
            zp[2 * (nd - 1 - ax)] = zp[2 * (nd - 1 - ax) + 1] = extra
            xp = F.pad(xp, zp)
        out = conv(xp, k.view(shape), groups=b * c)
    return out.view_as(image)
