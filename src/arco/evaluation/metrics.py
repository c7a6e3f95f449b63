"""Per-case, per-class segmentation metrics: Dice, Jaccard, HD95 and ASD (medpy definitions).

The definitions follow ``medpy.metric.binary`` exactly, because the paper tables (SSL4MIS / ARCO
``calculate_metric_percase``) are computed with medpy in voxel units:

- Dice ``2|P∩G| / (|P|+|G|)`` and Jaccard ``|P∩G| / |P∪G|`` (medpy ``dc`` / ``jc``).
- Surfaces are ``mask XOR binary_erosion(mask, generate_binary_structure(ndim, 1))`` (medpy's default
  ``connectivity=1``); surface distances come from ``distance_transform_edt`` of the complement of the other
  surface, with ``sampling=spacing`` for millimetres.
- ASD is one-directional, prediction surface -> GT surface (medpy ``asd``, not ``assd``).
- HD95 is the 95th percentile of the *pooled* two-way surface distances (medpy ``hd95``). MONAI's
  ``compute_hausdorff_distance(percentile=95)`` differs: it takes the maximum of the two directional
  95th percentiles, which is larger or equal. MONAI's Dice and (one-directional) ASD match medpy.

Empty masks (medpy raises, MONAI returns inf/NaN) follow an explicit policy, see :func:`case_metrics`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from arco._checks import choice

__all__ = [
    "COMPAT_MODES",
    "EMPTY_CASES",
    "METRICS",
    "MM_METRICS",
    "binary_metrics",
    "case_metrics",
    "surface_distances",
]

METRICS = ("dice", "jaccard", "hd95", "asd")
MM_METRICS = ("hd95_mm", "asd_mm")
COMPAT_MODES = ("default", "reference")
# Names of the empty-mask cases as written in the reports ("" = both masks non-empty).
EMPTY_CASES = ("both_empty", "empty_pred", "empty_gt")

# Margin (voxels) around the joint bounding box. Any crop that holds both masks gives identical distances
# (Euclidean distances do not depend on the crop, and erosion with border_value=0 sees zeros either way);
# one voxel keeps the surfaces away from the crop edge for readability.
_MARGIN = 1


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of ``pred`` to the ``gt`` surface, and from ``gt`` to ``pred``.

    Args:
        pred: bool array of any dimension, non-empty.
        gt: bool array of the same shape, non-empty.
        spacing: voxel size per array axis (distances in those units), or ``None`` for voxel units.

    Returns:
        ``(d_pred_to_gt, d_gt_to_pred)``: 1-D float64 arrays (medpy ``__surface_distances``, both ways).
    """
    both = pred | gt
    lo = np.maximum(np.min(np.nonzero(both), axis=1) - _MARGIN, 0)
    hi = np.max(np.nonzero(both), axis=1) + 1 + _MARGIN
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    p, g = pred[box], gt[box]
    footprint = ndimage.generate_binary_structure(p.ndim, 1)
    p_border = p ^ ndimage.binary_erosion(p, structure=footprint, iterations=1)
    g_border = g ^ ndimage.binary_erosion(g, structure=footprint, iterations=1)
    sampling = None if spacing is None else np.asarray(spacing, dtype=np.float64)
    d_to_g = ndimage.distance_transform_edt(~g_border, sampling=sampling)[p_border]
    d_to_p = ndimage.distance_transform_edt(~p_border, sampling=sampling)[g_border]
    return d_to_g, d_to_p


def _diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    size = np.asarray(shape, dtype=np.float64)
    if spacing is not None:
        size = size * np.asarray(spacing, dtype=np.float64)
    return float(math.sqrt(float(np.sum(size**2))))


def binary_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, compat: str = "default"
) -> dict[str, float | str]:
    """Dice, Jaccard, HD95, ASD of one binary mask pair, with the empty-mask policy applied.

    Args:
        pred: prediction mask (any dtype; non-zero = foreground), shape ``S``.
        gt: ground-truth mask, same shape ``S``.
        spacing: voxel size per axis of ``S`` (mm); adds ``hd95_mm`` and ``asd_mm`` when given.
        compat: ``"default"`` or ``"reference"``; see :func:`case_metrics`.

    Returns:
        ``{"dice", "jaccard", "hd95", "asd", ["hd95_mm", "asd_mm"], "empty"}``; ``empty`` is one of
        :data:`EMPTY_CASES` or ``""``.
    """
    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    keys = METRICS + (MM_METRICS if spacing is not None else ())
    if n_p and n_g:
        inter = int(np.count_nonzero(p & g))
        out: dict[str, float | str] = {
            "dice": 2.0 * inter / (n_p + n_g),
            "jaccard": inter / int(np.count_nonzero(p | g)),
        }
        d_pg, d_gp = surface_distances(p, g)
        out["hd95"] = float(np.percentile(np.hstack((d_pg, d_gp)), 95))
        out["asd"] = float(d_pg.mean())
        if spacing is not None:
            d_pg, d_gp = surface_distances(p, g, spacing)
            out["hd95_mm"] = float(np.percentile(np.hstack((d_pg, d_gp)), 95))
            out["asd_mm"] = float(d_pg.mean())
        out["empty"] = ""
        return out
    empty = "both_empty" if not (n_p or n_g) else ("empty_pred" if not n_p else "empty_gt")
    if compat == "reference":
        # SSL4MIS / ARCO calculate_metric_percase: a prediction on an empty GT scores 1 / 0 distance; an empty
        # prediction scores 0 on every metric (including 0 distance, which flatters misses).
        score = 1.0 if empty == "empty_gt" else 0.0
        out = {k: (score if k in ("dice", "jaccard") else 0.0) for k in keys}
    elif empty == "both_empty":
        out = {k: (1.0 if k in ("dice", "jaccard") else 0.0) for k in keys}
    else:
        diag = {"hd95": _diagonal(p.shape, None), "asd": _diagonal(p.shape, None)}
        if spacing is not None:
            diag["hd95_mm"] = diag["asd_mm"] = _diagonal(p.shape, spacing)
        out = {"dice": 0.0, "jaccard": 0.0, **diag}
    out["empty"] = empty
    return out


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    compat: str = "default",
) -> list[dict[str, float | int | str]]:
    """Metrics of every foreground class ``1..num_classes-1`` for one case.

    Empty-mask policy (``compat="default"``), recorded per class in the ``empty`` field:

    - ``both_empty`` (class absent from both): Dice 1, Jaccard 1, HD95 0, ASD 0 (nothing to find, none found).
    - ``empty_pred`` (missed structure): Dice 0, Jaccard 0, distances = image diagonal (voxels; mm with
      spacing), the worst possible distance, so a miss never improves a mean distance.
    - ``empty_gt`` (false positive on an empty GT): Dice 0, Jaccard 0, distances = image diagonal.

    The image diagonal is ``sqrt(sum(shape**2))`` voxels, ``sqrt(sum((shape * spacing)**2))`` mm.
    ``compat="reference"`` reproduces SSL4MIS / ARCO ``calculate_metric_percase``: both non-empty -> metrics;
    prediction non-empty and GT empty -> Dice 1, Jaccard 1, HD95 0, ASD 0; empty prediction -> all 0 (so both
    empty also scores 0). An empty case emits a ``UserWarning``; reports count them.

    Args:
        pred: int label map, any shape ``S`` (``(D, H, W)`` for a volume), values in ``0..num_classes-1``.
        gt: int label map of shape ``S``.
        num_classes: number of classes including background (>= 2).
        spacing: voxel size per axis of ``S`` in mm, or ``None``; adds ``hd95_mm`` / ``asd_mm``.
        compat: ``"default"`` or ``"reference"``.

    Returns:
        One dict per foreground class: ``class`` (int), ``dice``, ``jaccard``, ``hd95``, ``asd`` (voxels),
        ``hd95_mm``, ``asd_mm`` (when ``spacing``), ``empty`` (``""`` or one of :data:`EMPTY_CASES`).

    Raises:
        ValueError: shapes differ, bad ``num_classes``/``compat``/``spacing``, or labels out of range.

    Example:
        >>> a = np.zeros((8, 8), int); a[2:6, 2:6] = 1
        >>> r = case_metrics(a, a, num_classes=2)[0]
        >>> r["dice"], r["hd95"], r["empty"]
        (1.0, 0.0, '')
    """
    choice("compat", compat, COMPAT_MODES, where="case_metrics()")
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"case_metrics(): pred and gt must have the same shape, got {pred.shape} and {gt.shape}; "
            "resample the prediction to the label grid"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"case_metrics(): num_classes must be an integer >= 2, got {num_classes!r}")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != pred.ndim or not all(s > 0 and math.isfinite(s) for s in spacing):
            raise ValueError(
                f"case_metrics(): spacing must hold {pred.ndim} positive numbers "
                f"(one per axis of {pred.shape}), got {spacing}"
            )
    for name, arr in (("pred", pred), ("gt", gt)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"case_metrics(): {name} labels must lie in 0..{num_classes - 1}, "
                f"got range {arr.min()}..{arr.max()}; check num_classes"
            )
    rows = []
    for c in range(1, int(num_classes)):
        row: dict[str, float | int | str] = {"class": c}
        row.update(binary_metrics(pred == c, gt == c, spacing, compat))
        if row["empty"]:
            warnings.warn(
                f"class {c}: {row['empty']} (scored by the {compat!r} empty-mask policy)",
                UserWarning,
                stacklevel=2,
            )
        rows.append(row)
    return rows
