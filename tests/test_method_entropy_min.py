"""Entropy minimisation: the objective on a stub (whole batch as SSL4MIS, or unlabeled only) and CLI runs."""

from __future__ import annotations

import math

import pytest
import torch

from _baseline_checks import NUM_CLASSES, batch, ref_sup, sigmoid_ramp, stubbed
from _cli_runs import smoke


def _normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    p = logits.double().softmax(1)
    return -(p * torch.log(p + 1e-6)).sum(1) / math.log(NUM_CLASSES)


@pytest.mark.parametrize("include_labeled", [True, False])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_objective_is_sup_plus_ramped_normalised_entropy(include_labeled, spatial_dims):
    m, s, _ = stubbed("entropy-min", spatial_dims, teacher=False, include_labeled=include_labeled)
    b = batch(spatial_dims, bl=2, bu=3)
    step = 40
    out = m.training_step(b, step)
    ent_l, ent_u = _normalised_entropy(s.closed_form(b.image_l)), _normalised_entropy(s.closed_form(b.image_u))
    ent = torch.cat([ent_l, ent_u]).mean() if include_labeled else ent_u.mean()
    assert abs(float(ent_l.mean() - ent_u.mean())) > 1e-3  # the two choices really differ
    sup = ref_sup(s.closed_form(b.image_l), b.label_l)
    assert float(out.logs["loss_ent"]) == pytest.approx(float(ent), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(sup + 0.1 * sigmoid_ramp(step, 100) * ent), rel=1e-5)


def test_defaults_are_ssl4mis():
    from arco.methods.entropy_min import EntropyMinConfig

    assert EntropyMinConfig() == EntropyMinConfig(consistency=0.1, rampup=1.0, sup_weight=0.5, include_labeled=True)


def test_entropy_is_zero_for_certain_and_one_for_uniform_predictions():
    from arco.methods.entropy_min import normalized_entropy

    uniform = torch.zeros(1, 4, 2, 2)
    certain = 100 * torch.nn.functional.one_hot(torch.tensor([[[0, 1], [2, 3]]]), 4).permute(0, 3, 1, 2).float()
    assert float(normalized_entropy(uniform)) == pytest.approx(1.0, abs=1e-5)
    assert float(normalized_entropy(certain)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cli_trains_and_evaluates(tmp_path, spatial_dims):
    _, rows, summary, _ = smoke(tmp_path, "entropy-min", spatial_dims)
    assert list(rows[0])[3:6] == ["loss", "loss_sup", "loss_ent"]
    assert all(0.0 <= float(r["loss_ent"]) <= 1.0 for r in rows)
    assert 0.0 <= summary["mean"]["dice"] <= 1.0
