"""Resampling to a target spacing, cropping to the body or the labelled foreground, and the geometry that maps a
preprocessed case back onto its source grid (nnU-Net style; scipy only).

Arrays are in `Volume` order ``(Z, Y, X)`` and spacings are per array axis in mm. Resampling aligns voxel *edges*
(``scipy.ndimage.zoom(grid_mode=True)``, as ``skimage.transform.resize`` in nnU-Net), so the physical extent
``shape * spacing`` of a case is preserved up to the rounding of the new shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from arco._checks import DataError

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "check_spacing",
    "target_shape",
    "resample_image",
    "resample_label",
    "bounding_box",
    "grid_affine",
    "restore_label",
]

# nnU-Net (default_resampling.py): when max/min spacing exceeds 3 the low-resolution axis is interpolated
# separately with order 0, because a cubic spline across thick slices invents structure between them.
ANISOTROPY_THRESHOLD = 3.0

Box = tuple[tuple[int, int], ...]


def check_spacing(spacing: Sequence[float], where: str, error: type[Exception] = ValueError) -> tuple[float, ...]:
    """Return ``spacing`` as 3 positive finite floats (``(Z, Y, X)`` mm) or raise ``error`` naming ``where``
    (`DataError` for a file header, ``ValueError`` for an option)."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise error(f"{where}: spacing must be 3 numbers (Z Y X, mm), got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise error(f"{where}: spacing must be 3 positive finite numbers (Z Y X, mm), got {list(values)}")
    return values


def target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling from ``spacing`` to ``target``: ``round(shape * spacing / target)`` (>= 1); an axis
    of size 1 (a 2D case) stays 1.

    Example:
        >>> target_shape((10, 64, 64), (3.0, 0.5, 0.5), (1.5, 1.0, 1.0))
        (20, 32, 32)
    """
    return tuple(1 if n == 1 else max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True))


def _zoom(arr: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    factors = [n / o for n, o in zip(new_shape, arr.shape)]
    if all(f == 1 for f in factors):
        return arr
    return ndimage.zoom(arr, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)


def resample_image(
    image: np.ndarray,
    new_shape: Sequence[int],
    spacing: Sequence[float],
    order: int = 3,
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
) -> np.ndarray:
    """Resample a float ``(Z, Y, X)`` image to ``new_shape`` (nnU-Net rule).

    Third-order B-spline by default; when the source is anisotropic (max/min ``spacing`` > ``anisotropy_threshold``)
    the in-plane axes use ``order`` and the thick axis nearest neighbour, in two passes. Returns float32; the
    input is returned unchanged when the shape already matches.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(image.shape) == new_shape:
        return image
    image = np.asarray(image, dtype=np.float32)
    if max(spacing) / min(spacing) <= anisotropy_threshold:
        return _zoom(image, new_shape, order).astype(np.float32, copy=False)
    thick = int(np.argmax(spacing))
    inplane = tuple(image.shape[a] if a == thick else new_shape[a] for a in range(3))
    out = _zoom(image, inplane, order)
    return _zoom(out, new_shape, 0).astype(np.float32, copy=False)


def resample_label(label: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of an integer label map to ``new_shape`` (edges aligned, dtype kept)."""
    return _zoom(np.asarray(label), tuple(int(n) for n in new_shape), 0)


def bounding_box(mask: np.ndarray, margin: int = 0) -> Box | None:
    """``((z0, z1), (y0, y1), (x0, x1))`` (half-open) of the True voxels of ``mask`` widened by ``margin`` voxels
    and clipped to the array, or None when ``mask`` is empty.

    Example:
        >>> m = np.zeros((4, 5, 6), bool); m[1, 2:4, 3] = True
        >>> bounding_box(m, margin=1)
        ((0, 3), (1, 5), (2, 5))
    """
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        if hit.size == 0:
            return None
        box.append((max(0, int(hit[0]) - margin), min(mask.shape[axis], int(hit[-1]) + 1 + margin)))
    return tuple(box)


def grid_affine(affine: np.ndarray, box: Box, cropped_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Voxel-to-world matrix of the preprocessed grid (nibabel axis order, like the source ``affine``).

    A preprocessed voxel ``j`` (array order) sits at source voxel ``box_start + (j + 0.5) * c / n - 0.5`` for a
    crop of ``c`` voxels resampled to ``n`` (edge-aligned), so ``A_new = A_source @ M`` with that scale and shift.
    """
    scale = np.array([c / n for c, n in zip(cropped_shape, new_shape)], dtype=np.float64)
    shift = np.array([b[0] for b in box], dtype=np.float64) + 0.5 * scale - 0.5
    m = np.eye(4)
    m[:3, :3] = np.diag(scale[::-1])  # array (Z, Y, X) -> nibabel (X, Y, Z)
    m[:3, 3] = shift[::-1]
    return np.asarray(affine, dtype=np.float64) @ m


def restore_label(label: np.ndarray, original_shape: Sequence[int], box: Box) -> np.ndarray:
    """Map a label on the preprocessed grid back to the source grid: nearest-neighbour resampling to the crop
    size, then pasted into zeros of ``original_shape`` at ``box`` (what `arco.data.preprocessed` stores per case).

    Raises:
        DataError: ``box`` does not fit ``original_shape``.
    """
    original_shape = tuple(int(s) for s in original_shape)
    if len(box) != 3 or any(not (0 <= a < b <= s) for (a, b), s in zip(box, original_shape)):
        raise DataError(f"restore_label(): crop box {box} does not fit the original shape {original_shape}")
    cropped = tuple(b - a for a, b in box)
    out = np.zeros(original_shape, dtype=label.dtype)
    out[tuple(slice(a, b) for a, b in box)] = resample_label(label, cropped)
    return out
