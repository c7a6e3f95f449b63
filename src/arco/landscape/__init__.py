"""Loss landscapes of trained runs (paper Fig. 3 and App. M; ``arco landscape``).

- :mod:`arco.landscape.pixels`: the per-pixel L_contrast of an ARCO stage-2 run on test slices, every pixel an anchor
  of its ground-truth class against its class's positive and the negatives the run draws from its banks.
- :mod:`arco.landscape.weights`: the loss surface around a run's final weights along two filter-normalised random
  directions (Li et al., NeurIPS 2018), with a sharpness summary.
- :mod:`arco.landscape.slices` picks the slices, :mod:`arco.landscape.output` writes figures, CSV, NPY and JSON.
See ``docs/landscapes.md``.
"""

from __future__ import annotations

from arco.landscape.output import write_pixels, write_weights
from arco.landscape.pixels import PixelLandscape, check_pixel_run, pixel_landscape, pixel_losses
from arco.landscape.slices import choose_slices, default_slice, slice_input
from arco.landscape.weights import (
    WeightLandscape,
    filter_normalized_directions,
    grid_coordinates,
    load_model,
    sharpness,
    weight_landscape,
)

__all__ = [
    "PixelLandscape",
    "WeightLandscape",
    "check_pixel_run",
    "choose_slices",
    "default_slice",
    "filter_normalized_directions",
    "grid_coordinates",
    "load_model",
    "pixel_landscape",
    "pixel_losses",
    "sharpness",
    "slice_input",
    "weight_landscape",
    "write_pixels",
    "write_weights",
]
