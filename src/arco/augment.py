"""Batched, on-device augmentations that training methods apply to whole batches (no Python loop over items).

CutMix (one box per item, pasted from another item, applied identically to the image and to every target such as
pseudo-labels and confidences), photometric colour jitter, Gaussian blur, and random similarity warps (rotation,
scale, shift, mirror) for equivariance terms. Inputs are ``(B, C, *S)`` with ``S``
2D or 3D on any device; randomness comes from an explicit ``torch.Generator`` so a method's augmentation is
reproducible and resumable. The per-sample weak augmentation of the data loaders is in :mod:`arco.data.transforms`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "cutmix",
    "box_mask",
    "color_jitter",
    "brightness_contrast",
    "gaussian_blur",
    "uniform",
    "random_similarity",
    "warp",
]


def uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` uniforms in [0, 1) drawn on the generator's device and moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gdev).to(device)


def box_mask(shape: tuple[int, ...], generator, device, area: tuple[float, float]) -> torch.Tensor:
    """One random axis-aligned box per batch item: bool ``(B, *S)``; box volume fraction uniform in
    ``area``."""
    b, spatial = shape[0], shape[1:]
    nd = len(spatial)
    r = uniform(b * (1 + 2 * nd), generator, device).view(b, 1 + 2 * nd)
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
    """CutMix inside a batch: for each item (with probability ``p``) paste a random box taken from the next item,
    ``(i + 1) mod B`` (the reference code's ``generate_unsup_data`` partner), so that no image is pasted into
    itself when ``B >= 2`` (a batch of one is left as it is: its only partner is itself).

    The same boxes and the same partners are applied to ``image (B, C, *S)`` and to every target ``(B, *S)``
    (pseudo-label, confidence, ...), so pasted pixels keep their own labels.

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
    perm = (torch.arange(b, device=device) + 1) % b
    mask = box_mask((b, *spatial), generator, device, area)
    mask &= (uniform(b, generator, device) < p).view(b, *([1] * len(spatial)))
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
    r = uniform(4 * b, generator, image.device).view(4, b, *([1] * nd)).to(image.dtype)
    on = r[3] < p
    lo, hi = image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    g = gamma[0] + (gamma[1] - gamma[0]) * r[0]
    x = ((image - lo) / span).clamp(0, 1) ** g
    mean = x.mean(dim=dims, keepdim=True)
    x = (x - mean) * (1 + contrast * (2 * r[1] - 1)) + mean + brightness * (2 * r[2] - 1)
    return torch.where(on, x * span + lo, image)


def brightness_contrast(
    image: torch.Tensor, generator: torch.Generator | None = None, strength: float = 0.25, p: float = 0.5
) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness=s, contrast=s)`` on grey-level images, per item with probability ``p``.

    Each channel is rescaled to [0, 1] by its own min/max (the range a PIL image has), multiplied by a brightness
    factor ``U(1-s, 1+s)``, blended with its mean by a contrast factor ``U(1-s, 1+s)``, clipped to [0, 1] as PIL
    does, and mapped back to its range. This is the strong view of the ARCO / ReCo reference code (s = 0.25 in
    fine-tuning, 0.2 in pre-training; saturation and hue do nothing to grey images).
    """
    b, nd = image.shape[0], image.dim() - 1
    dims = tuple(range(2, image.dim()))
    r = uniform(3 * b, generator, image.device).view(3, b, *([1] * nd)).to(image.dtype)
    lo, hi = image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    x = ((image - lo) / span * (1 + strength * (2 * r[0] - 1))).clamp(0, 1)
    mean = x.mean(dim=dims, keepdim=True)
    x = ((x - mean) * (1 + strength * (2 * r[1] - 1)) + mean).clamp(0, 1)
    return torch.where(r[2] < p, x * span + lo, image)


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
    r = uniform(2 * b, generator, image.device).view(2, b)
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


def random_similarity(
    n: int,
    spatial_dims: int,
    generator: torch.Generator | None,
    device: torch.device,
    rotate: float = 60.0,
    scale: tuple[float, float] = (0.8, 1.2),
    translate: float = 0.1,
    mirror: bool = True,
) -> torch.Tensor:
    """``n`` random similarity transforms as ``affine_grid`` matrices ``(n, d, d + 1)`` (output -> input coordinates).

    Rotation uniform in ±``rotate`` degrees in the last two axes' plane (the axial plane of a 3D volume), isotropic
    zoom uniform in ``scale`` (the content grows by the factor), shift uniform in ±``translate`` of the half-extent per
    axis, and a mirror of the last axis with probability 0.5 when ``mirror``. These are the ARCO reference code's
    equivariance warps (``RandTPS(mode='affine')``: ±60°, zoom 0.8-1.2, shift 0.1; its 0.01 TPS jitter is left out).
    """
    r = uniform(n * (3 + spatial_dims), generator, device).view(3 + spatial_dims, n)
    angle = torch.deg2rad(torch.as_tensor(rotate, device=device)) * (2 * r[0] - 1)
    zoom = scale[0] + (scale[1] - scale[0]) * r[1]
    flip = torch.where((r[2] < 0.5) & mirror, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, spatial_dims, spatial_dims + 1, device=device)
    eye = torch.arange(spatial_dims, device=device)
    theta[:, eye, eye] = 1.0 / zoom[:, None]
    # affine_grid's coordinate order is (x = last axis, y = second last, ...): rotate (x, y), mirror x
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, -1] = translate * (2 * r[3:] - 1).T
    return theta


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resample ``x (B, C, *S)`` with the transforms ``theta`` of :func:`random_similarity`; zeros outside."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
