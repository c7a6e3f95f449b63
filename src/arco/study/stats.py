"""Statistics of a study: mean ± std over seeds, and paired differences between arms.

The paired difference of an arm to its reference pairs the two arms' per-case mean foreground Dice over
(seed, test case): the same seed and the same test case in both arms. Its 95 % confidence interval is a
bootstrap of the mean difference over those pairs (``scipy.stats.bootstrap``, paired resampling, BCa, fixed
``random_state``); its p-value is the two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``). The pairs are
treated as independent, which ignores that cases of one seed share a network: with few seeds read the interval as
a description of the case-level spread rather than a guarantee.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["mean_std", "paired_difference", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED"]

BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, sample std (ddof=1; NaN for one value), n)`` of the finite values."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan"), int(a.size)


def paired_difference(
    arm: Sequence[float],
    reference: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    random_state: int = BOOTSTRAP_SEED,
) -> dict[str, float]:
    """Mean of ``arm - reference`` over pairs, its bootstrap confidence interval and the Wilcoxon p-value.

    Args:
        arm, reference: paired values (same length, same order).
        confidence: confidence level of the interval (0.95).
        n_resamples, random_state: of ``scipy.stats.bootstrap`` (fixed, so reports are reproducible).

    Returns:
        ``{"n", "mean", "ci_low", "ci_high", "p_wilcoxon"}``. With fewer than two pairs the interval and p are
        NaN; when every difference is equal the interval is that single value (and p is 1 when it is 0).

    Raises:
        ValueError: different lengths or non-finite values.
    """
    from scipy import stats

    a, b = np.asarray(arm, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference(): arm and reference must be 1-D of one length, got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_difference(): values must be finite")
    d = a - b
    out = {"n": int(d.size), "mean": float(d.mean()) if d.size else float("nan")}
    if d.size < 2:
        return {**out, "ci_low": float("nan"), "ci_high": float("nan"), "p_wilcoxon": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy warns about ties / zeros with small samples
        p = 1.0 if np.all(d == 0) else float(stats.wilcoxon(a, b).pvalue)
    if np.all(d == d[0]):  # the bootstrap distribution is a single point (BCa is undefined)
        return {**out, "ci_low": float(d[0]), "ci_high": float(d[0]), "p_wilcoxon": p}
    res = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        paired=True,
        confidence_level=confidence,
        n_resamples=n_resamples,
        random_state=random_state,
        vectorized=True,
    )
    return {
        **out,
        "ci_low": float(res.confidence_interval.low),
        "ci_high": float(res.confidence_interval.high),
        "p_wilcoxon": p,
    }
