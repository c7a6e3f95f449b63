"""Feature-space perturbations of SSL4MIS's CCT and URPC networks (``networks/unet.py``), driven by a generator.

SSL4MIS draws them from numpy / torch global state; here every draw comes from an explicit ``torch.Generator``
so a method that uses them resumes bit-identically. Inputs are ``(B, C, *S)`` feature maps, 2D or 3D, any dtype;
outputs have the input's dtype and device and stay differentiable with respect to the input.
"""

from __future__ import annotations

import torch

__all__ = ["feature_noise", "feature_dropout", "random_dropout"]


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    gdev = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=gdev).to(device=like.device, dtype=like.dtype)


def feature_noise(
    x: torch.Tensor, generator: torch.Generator | None = None, uniform_range: float = 0.3
) -> torch.Tensor:
    """``x + x * n`` with ``n ~ U(-r, r)`` of shape ``x.shape[1:]``, one draw shared by the batch (SSL4MIS
    ``FeatureNoise``: multiplicative noise, r = 0.3).

    Example:
        >>> x = torch.ones(2, 3, 4, 4)
        >>> y = feature_noise(x, torch.Generator().manual_seed(0))
        >>> bool(((y - 1).abs() <= 0.3).all()) and torch.equal(y[0], y[1])
        True
    """
    if uniform_range < 0:
        raise ValueError(f"feature_noise(): uniform_range must be >= 0, got {uniform_range}")
    noise = (2 * _uniform(tuple(x.shape[1:]), generator, x) - 1) * uniform_range
    return x + x * noise.unsqueeze(0)


def feature_dropout(
    x: torch.Tensor, generator: torch.Generator | None = None, low: float = 0.7, high: float = 0.9
) -> torch.Tensor:
    """Zero the positions whose channel-mean activation reaches ``gamma`` times the item's maximum channel-mean,
    with one ``gamma ~ U(low, high)`` per call (SSL4MIS ``FeatureDropout``: drops the most activated regions).

    Example:
        >>> x = torch.tensor([[[[1.0, 5.0], [2.0, 10.0]]]])  # channel mean = x; max 10 -> threshold 7..9
        >>> feature_dropout(x, torch.Generator().manual_seed(0))[0, 0].tolist()
        [[1.0, 5.0], [2.0, 0.0]]
    """
    if not 0 <= low <= high:
        raise ValueError(f"feature_dropout(): need 0 <= low <= high, got low={low}, high={high}")
    attention = x.mean(dim=1, keepdim=True)
    peak = attention.flatten(1).amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
    gamma = low + (high - low) * _uniform((1,), generator, x)
    keep = attention < peak * gamma
    return x * keep.to(x.dtype)


def random_dropout(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None, channels: bool = False
) -> torch.Tensor:
    """Dropout that is always on, with its mask drawn from ``generator``: each element (or, with ``channels``, each
    whole channel as ``Dropout2d/3d``) is zeroed with probability ``p`` and the rest scaled by ``1/(1-p)``
    (SSL4MIS ``Dropout``: ``F.dropout(x, p)`` in the CCT/URPC perturbations)."""
    if not 0 <= p < 1:
        raise ValueError(f"random_dropout(): p must be in [0, 1), got {p}")
    shape = tuple(x.shape[:2]) + (1,) * (x.dim() - 2) if channels else tuple(x.shape)
    keep = _uniform(shape, generator, x) >= p
    return x * keep.to(x.dtype) / (1 - p)
