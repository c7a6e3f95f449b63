"""Evaluation: medpy-compatible metrics, whole-volume inference, reports, overlays and training curves.

This package takes a predictor callable and duck-typed volumes; it never imports ``arco.models`` or
``arco.data``.
"""

from __future__ import annotations

from arco.evaluation.curves import plot_training_curves
from arco.evaluation.inference import REFERENCE_STRIDE_3D, overlap_from_stride, predict_volume
from arco.evaluation.metrics import COMPAT_MODES, EMPTY_CASES, binary_metrics, case_metrics, surface_distances
from arco.evaluation.overlay import save_overlay
from arco.evaluation.report import EvaluationResult, check_writable, evaluate, evaluate_arrays, evaluate_model

__all__ = [
    "COMPAT_MODES",
    "EMPTY_CASES",
    "REFERENCE_STRIDE_3D",
    "EvaluationResult",
    "binary_metrics",
    "case_metrics",
    "check_writable",
    "evaluate",
    "evaluate_arrays",
    "evaluate_model",
    "overlap_from_stride",
    "plot_training_curves",
    "predict_volume",
    "save_overlay",
    "surface_distances",
]
