"""UA-MT: the uncertainty-masked objective on a stub, the threshold schedule, Monte Carlo dropout with eval-mode
batch norm in one batched teacher forward, CLI runs in 2D and 3D, and bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch

from _baseline_checks import NUM_CLASSES, batch, ref_sup, sigmoid_ramp, stubbed
from _cli_runs import smoke
from _tiny import assert_resume_identical, build


@pytest.mark.parametrize("step", [20, 60])
def test_objective_masks_the_consistency_by_the_teachers_entropy(step):
    m, s, t = stubbed("ua-mt", noise_std=0.0)  # no noise and a stub without dropout: all T passes agree
    b = batch(bu=3, size=16)
    out = m.training_step(b, step)
    p_s = s.closed_form(b.image_u).double().softmax(1)
    p_t = t.closed_form(b.image_u).double().softmax(1)
    entropy = -(p_t * torch.log(p_t + 1e-6)).sum(1, keepdim=True)
    threshold = (0.75 + 0.25 * sigmoid_ramp(step, 100)) * math.log(NUM_CLASSES)
    mask = (entropy < threshold).double()
    assert 0.05 < float(mask.mean()) < 0.95  # some pixels kept, some masked: the mask matters
    cons = (mask * (p_s - p_t) ** 2).sum() / (NUM_CLASSES * mask.sum() + 1e-16)
    sup = ref_sup(s.closed_form(b.image_l), b.label_l)
    w = 0.1 * sigmoid_ramp(step, 100)
    assert float(out.logs["certain"]) == pytest.approx(float(mask.mean()), abs=1e-6)
    assert float(out.logs["loss_cons"]) == pytest.approx(float(cons), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(sup + w * cons), rel=1e-5)


def test_threshold_ramps_from_three_quarters_of_ln_c_to_ln_c():
    m = build("ua-mt", total=1000)
    ln_c = math.log(NUM_CLASSES)
    assert m.threshold(0) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ln_c)
    assert m.threshold(500) == pytest.approx((0.75 + 0.25 * math.exp(-1.25)) * ln_c)
    assert m.threshold(1000) == pytest.approx(ln_c)


def test_uncertainty_is_one_batched_mc_dropout_pass_with_eval_batch_norm():
    m = build("ua-mt", noise_std=0.0)
    teacher = m.components()["teacher"]
    calls = []
    teacher.register_forward_hook(lambda mod, inp, out: calls.append(out.logits.detach()))
    running = {k: v.clone() for k, v in teacher.state_dict().items()}
    u = batch(bu=2, size=32).image_u
    unc = m.uncertainty(u)
    assert len(calls) == 1 and calls[0].shape[0] == 8 * 2  # T = 8 passes in one forward, no loop over T
    passes = calls[0].view(8, 2, *calls[0].shape[1:])
    assert not torch.allclose(passes[0], passes[1])  # dropout was active: the passes differ
    assert not teacher.training and not any(mod.training for mod in teacher.modules())  # restored to eval
    assert all(torch.equal(v, running[k]) for k, v in teacher.state_dict().items())  # BN statistics untouched
    mean = passes.softmax(2).mean(0)
    expected = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
    assert torch.allclose(unc, expected, atol=1e-6)


def test_defaults_are_ua_mt():
    from arco.methods.ua_mt import UAMTConfig

    assert UAMTConfig() == UAMTConfig(
        ema=0.99, consistency=0.1, rampup=1.0, noise_std=0.1, noise_clip=0.2, sup_weight=0.5, passes=8,
        threshold_start=0.75, threshold_end=1.0, threshold_rampup=1.0,
    )  # fmt: skip


def test_bad_config_values_are_named():
    from arco.methods.ua_mt import UAMTConfig

    with pytest.raises(ValueError, match="passes"):
        UAMTConfig(passes=0)
    with pytest.raises(ValueError, match="threshold_start"):
        UAMTConfig(threshold_start=1.2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cli_trains_and_evaluates(tmp_path, spatial_dims):
    _, rows, summary, _ = smoke(tmp_path, "ua-mt", spatial_dims)
    assert list(rows[0])[3:7] == ["loss", "loss_sup", "loss_cons", "certain"]
    assert all(0.0 <= float(r["certain"]) <= 1.0 for r in rows)
    assert 0.0 <= summary["mean"]["dice"] <= 1.0


def test_resume_is_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "ua-mt")
