"""`Volume` (a whole case) and intensity normalisation, per case and per channel.

Channel convention (docs/design.md): a single-channel image is ``(D, H, W)``; a multi-channel image is
``(C, D, H, W)`` with ``C >= 2`` (channel first, as MONAI and nnU-Net). Labels are always ``(D, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arco._checks import ConfigError, choice

__all__ = [
    "Volume",
    "NORMALIZATIONS",
    "normalize",
    "normalize_channels",
    "channel_scheme",
    "resolve_normalization",
    "channels_first",
]

NORMALIZATIONS = ("minmax", "zscore", "ct", "none")

# nnU-Net v2 picks a channel's normalisation from its name in dataset.json `channel_names`
# (normalization/map_channel_name_to_normalization.py, case-insensitive); any other name is z-scored.
# Our `ct` is a fixed HU window scaled to [0, 1] (the LiTS protocol), not nnU-Net's dataset-wide percentiles.
_CHANNEL_SCHEMES = {"ct": "ct", "nonorm": "none", "zscore": "zscore", "rescale_to_0_1": "minmax"}


@dataclass
class Volume:
    """One case in array order ``(D, H, W)``; for 2D datasets slice ``k`` is ``image[k]`` (``image[:, k]``
    with channels).

    Attributes:
        case_id: case identifier (file stem).
        image: float32 ``(D, H, W)`` (one channel) or ``(C, D, H, W)`` (``C >= 2`` channels, e.g. T2/ADC/DWI),
            normalised exactly as for training.
        label: int64 ``(D, H, W)`` in ``0..C-1``, or None (unlabeled / prediction input).
        spacing: voxel size per spatial array axis in mm, or None when the file does not carry it (h5
            layouts).
        affine: 4x4 voxel-to-world matrix (NIfTI/RAS convention, nibabel axis order (X, Y, Z)), or None.
        source: file (or DICOM folder) the case was read from; the first channel's file for several.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    source: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(D, H, W)`` (the channel axis excluded)."""
        return tuple(self.image.shape[-3:])

    @property
    def in_channels(self) -> int:
        return int(self.image.shape[0]) if self.image.ndim == 4 else 1


def channels_first(image: np.ndarray, spatial_dims: int) -> np.ndarray:
    """View ``image`` as ``(C, *spatial)``: adds a channel axis of 1 when ``image.ndim == spatial_dims``."""
    image = np.asarray(image)
    if image.ndim == spatial_dims:
        return image[None]
    if image.ndim == spatial_dims + 1:
        return image
    raise ValueError(
        f"expected an image with {spatial_dims} spatial axes, optionally channel first, got shape {image.shape}"
    )


def normalize(image: np.ndarray, method: str, ct_window: tuple[float, float] = (-200.0, 250.0)) -> np.ndarray:
    """Return a float32 copy of ``image`` normalised per case.

    ``minmax`` maps [min, max] to [0, 1] (a constant image gives zeros); ``zscore`` subtracts the mean and
    divides by the standard deviation (1 if zero); ``ct`` clips to ``ct_window`` (HU) and scales to [0, 1]
    (LiTS protocol); ``none`` only casts.
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


def normalize_channels(
    image: np.ndarray, schemes: Sequence[str], ct_window: tuple[float, float] = (-200.0, 250.0)
) -> np.ndarray:
    """Normalise each channel of ``(C, *S)`` with its own scheme (``len(schemes) == C``); returns a copy."""
    if len(schemes) != image.shape[0]:
        raise ValueError(f"normalize_channels(): {len(schemes)} schemes for {image.shape[0]} channels")
    return np.stack([normalize(ch, s, ct_window) for ch, s in zip(image, schemes)])


def channel_scheme(name: str) -> str:
    """Normalisation of a channel named ``name`` in ``dataset.json`` (nnU-Net's rule: ``CT`` -> ``ct``,
    ``noNorm`` -> ``none``, ``rescale_to_0_1`` -> ``minmax``, anything else (T2, ADC, MRI, ...) -> ``zscore``)."""
    return _CHANNEL_SCHEMES.get(str(name).casefold(), "zscore")


def resolve_normalization(spec: str, channel_names: Sequence[str], default: str | None = None) -> tuple[str, ...]:
    """Per-channel schemes from ``data.normalization``.

    Args:
        spec: ``""`` (``default`` for every channel, or, when ``default`` is None, each channel's scheme from
            its name as nnU-Net does), one scheme for every channel (``"zscore"``), or a comma list with one
            scheme per channel (``"ct,zscore"``).
        channel_names: one name per channel.
        default: the dataset's fixed default, or None to follow the channel names.

    Raises:
        ConfigError: unknown scheme or a list of the wrong length.
    """
    n = len(channel_names)
    parts = [p.strip() for p in str(spec).split(",")] if str(spec).strip() else []
    for p in parts:
        if p not in NORMALIZATIONS:
            choice("data.normalization", p, NORMALIZATIONS)
    if not parts:
        return tuple(default for _ in range(n)) if default else tuple(channel_scheme(c) for c in channel_names)
    if len(parts) == 1:
        return tuple(parts * n)
    if len(parts) != n:
        raise ConfigError(
            f"data.normalization={spec!r} lists {len(parts)} schemes but the data has {n} channels "
            f"{list(channel_names)}; give one scheme for all channels or one per channel"
        )
    return tuple(parts)
