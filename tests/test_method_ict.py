"""ICT: the interpolation-consistency objective on a stub, the Beta(α, α) sampler against scipy, batch-size
errors, CLI runs in 2D and 3D, and bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch

from _baseline_checks import batch, ref_sup, sigmoid_ramp, stubbed
from _cli_runs import smoke
from _tiny import assert_resume_identical


@pytest.mark.parametrize("bu", [2, 5])
def test_objective_matches_the_mix_of_teacher_predictions(bu):
    m, s, t = stubbed("ict")
    b = batch(bu=bu, size=8)
    step = 70
    out = m.training_step(b, step)
    h = bu // 2
    u0, u1 = b.image_u[:h], b.image_u[h : 2 * h]
    mixed = s.inputs[0][b.image_l.shape[0] :]
    assert torch.equal(s.inputs[0][: b.image_l.shape[0]], b.image_l) and mixed.shape[0] == h
    # recover each pair's λ from the student's input: mixed = (1 - λ) u0 + λ u1 at every pixel
    lam = ((mixed - u0) * (u1 - u0)).flatten(1).sum(1) / ((u1 - u0) ** 2).flatten(1).sum(1)
    assert torch.allclose(mixed, (1 - lam.view(-1, 1, 1, 1)) * u0 + lam.view(-1, 1, 1, 1) * u1, atol=1e-5)
    assert bool(((lam >= 0) & (lam <= 1)).all())
    lam = lam.double().view(-1, 1, 1, 1)
    target = (1 - lam) * t.closed_form(u0).double().softmax(1) + lam * t.closed_form(u1).double().softmax(1)
    cons = ((s.closed_form(mixed).double().softmax(1) - target) ** 2).mean()
    sup = ref_sup(s.closed_form(b.image_l), b.label_l)
    assert float(out.logs["loss_cons"]) == pytest.approx(float(cons), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(sup + 0.1 * sigmoid_ramp(step, 100) * cons), rel=1e-5)


@pytest.mark.parametrize(("alpha", "beta"), [(0.2, 0.2), (1.0, 1.0), (2.0, 0.5)])
def test_beta_sampler_follows_the_beta_distribution(alpha, beta):
    from scipy import stats

    from arco.methods.ict import sample_beta

    n = 4000
    x = sample_beta(alpha, beta, n, torch.Generator().manual_seed(3))
    assert x.dtype == torch.float64 and bool(((x >= 0) & (x <= 1)).all())
    # Kolmogorov-Smirnov: D_n exceeds 1.95/sqrt(n) with probability 0.001 under the null.
    d = stats.kstest(x.numpy(), stats.beta(alpha, beta).cdf).statistic
    assert d < 1.95 / math.sqrt(n)


def test_gamma_sampler_mean_and_variance():
    from arco.methods.ict import sample_gamma

    n, shape = 20000, 0.3
    x = sample_gamma(shape, n, torch.Generator().manual_seed(5))
    # mean = var = shape; s.e. of the mean sqrt(shape/n): allow z = 5
    assert float(x.mean()) == pytest.approx(shape, abs=5 * math.sqrt(shape / n))


def test_defaults_are_ssl4mis():
    from arco.methods.ict import ICTConfig

    assert ICTConfig() == ICTConfig(alpha=0.2, ema=0.99, consistency=0.1, rampup=1.0, sup_weight=0.5)


def test_one_unlabeled_image_is_a_named_error():
    m, _, _ = stubbed("ict")
    with pytest.raises(ValueError, match="batch_unlabeled >= 2"):
        m.training_step(batch(bu=1), 0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cli_trains_and_evaluates(tmp_path, spatial_dims):
    _, rows, summary, _ = smoke(tmp_path, "ict", spatial_dims)
    assert list(rows[0])[3:6] == ["loss", "loss_sup", "loss_cons"]
    assert 0.0 <= summary["mean"]["dice"] <= 1.0


def test_resume_is_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "ict")
