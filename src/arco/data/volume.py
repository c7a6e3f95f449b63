"""`Volume` (a whole case) and intensity normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arco._checks import choice

__all__ = ["Volume", "NORMALIZATIONS", "normalize"]

NORMALIZATIONS = ("minmax", "zscore", "ct", "none")


@dataclass
class Volume:
    """One case in array order ``(D, H, W)``; for 2D datasets slice ``k`` is ``image[k]``.

    Attributes:
        case_id: case identifier (file stem).
        image: float32 ``(D, H, W)``, normalised exactly as for training.
        label: int64 ``(D, H, W)`` in ``0..C-1``, or None (unlabeled / prediction input).
        spacing: voxel size per array axis in mm, or None when the file does not carry it (h5 layouts).
        affine: 4x4 voxel-to-world matrix of the source NIfTI (nibabel axis order), or None.
        source: file the case was read from, or None.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    source: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


def normalize(image: np.ndarray, method: str, ct_window: tuple[float, float] = (-200.0, 250.0)) -> np.ndarray:
    """Return a float32 copy of ``image`` normalised per case.

    ``minmax`` maps [min, max] to [0, 1] (a constant image gives zeros); ``zscore`` subtracts the mean and
    divides by
    the standard deviation (1 if zero); ``ct`` clips to ``ct_window`` (HU) and scales to [0, 1] (LiTS
    protocol);
    ``none`` only casts.
    """
    choice("normalization", method, NORMALIZATIONS, "normalize()")
    x = np.asarray(image, dtype=np.float32)
    if method == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if method == "zscore":
        std = float(x.std())
        return (x - float(x.mean())) / (std if std > 0 else 1.0)
    if method == "ct":
        lo, hi = ct_window
        return (np.clip(x, lo, hi) - lo) / (hi - lo)
    return x.copy()
