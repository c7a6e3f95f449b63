"""Pixel-level self-supervised frameworks for ARCO's stage 2 (``finetune.framework``): SimCLR, MoCo v2, BYOL, ISD
and VICReg on pixels drawn by NS / SG / SAG (paper Sec. 1 and App. L: the samplers as a plug-in wherever pixels are
sampled). One file per framework; each registers itself in :data:`FRAMEWORKS`. See :mod:`._base` for the views and
the draws, and ``docs/methods.md`` for each objective, its source and its defaults.
"""

from __future__ import annotations

from arco.losses.frameworks import byol, isd, moco, simclr, vicreg  # noqa: F401 - each registers itself
from arco.losses.frameworks._base import FRAMEWORKS, FrameworkOptions, KeyQueue, PixelFramework, Predictor

__all__ = ["FRAMEWORKS", "FrameworkOptions", "PixelFramework", "KeyQueue", "Predictor", "build_framework", "NAMES"]

#: The registered frameworks, in the order of the paper's bibliography.
NAMES = ("simclr", "moco", "byol", "isd", "vicreg")


def build_framework(name: str, **kwargs) -> PixelFramework:
    """The framework ``name`` (one of :data:`NAMES`) built with ``kwargs`` (:class:`PixelFramework`'s)."""
    return FRAMEWORKS.build(name, **kwargs)
