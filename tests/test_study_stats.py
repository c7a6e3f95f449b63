"""Study statistics against scipy and hand-computed values on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from arco.study.stats import BOOTSTRAP_RESAMPLES, mean_std, paired_difference

ARM = [0.81, 0.77, 0.92, 0.64, 0.88, 0.71, 0.79, 0.85, 0.69, 0.9]
REF = [0.75, 0.78, 0.83, 0.61, 0.80, 0.72, 0.70, 0.79, 0.70, 0.84]


def test_mean_std_by_hand():
    m, s, n = mean_std([1.0, 2.0, 4.0])
    assert n == 3 and m == pytest.approx(7 / 3)
    assert s == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))  # ddof=1
    m1, s1, n1 = mean_std([0.5, float("nan"), None])
    assert (m1, n1) == (0.5, 1) and math.isnan(s1)
    assert mean_std([])[2] == 0


def test_paired_difference_matches_scipy():
    d = paired_difference(ARM, REF)
    a, b = np.array(ARM), np.array(REF)
    assert d["n"] == 10 and d["mean"] == pytest.approx(float(np.mean(a - b)))
    ref = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        paired=True,
        n_resamples=BOOTSTRAP_RESAMPLES,
        random_state=0,
        vectorized=True,
    )
    assert d["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert d["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=1e-12)
    assert d["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue, abs=1e-12)
    assert d["ci_low"] < d["mean"] < d["ci_high"]
    assert paired_difference(ARM, REF) == d  # fixed random_state: reproducible


def test_paired_difference_hand_values():
    # Six positive differences with distinct ranks: exact two-sided signed-rank p = 2 / 2**6.
    d = paired_difference([1, 2, 3, 4, 5, 6.5], [0, 0.5, 1, 1, 2, 2])
    assert d["p_wilcoxon"] == pytest.approx(2 / 64)
    assert d["mean"] == pytest.approx(np.mean([1, 1.5, 2, 3, 3, 4.5]))
    assert 1.0 <= d["ci_low"] < d["ci_high"] <= 4.5  # inside the range of the differences
    same = paired_difference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (same["mean"], same["ci_low"], same["ci_high"], same["p_wilcoxon"]) == (0.0, 0.0, 0.0, 1.0)
    one = paired_difference([0.5], [0.4])
    assert one["mean"] == pytest.approx(0.1) and math.isnan(one["ci_low"]) and math.isnan(one["p_wilcoxon"])


def test_paired_difference_rejects_bad_input():
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1, float("nan")], [1, 2])
