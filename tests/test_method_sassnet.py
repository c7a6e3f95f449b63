"""SASSNet: the objective against an independent formula, gradient routing of the shape-aware adversary, resume, and
the CLI on phantom2d / phantom3d."""

from __future__ import annotations

import math

import pytest
import torch

from _cli_runs import smoke
from _tiny import assert_resume_identical, build
from arco.methods import get_method
from test_method_dan import _nll
from test_method_dtc import blob_batch, capture, fg_dice, sdf_targets


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_is_dice_plus_sdf_regression_plus_ramped_adversarial_plus_discriminator(spatial_dims):
    step, total = 60, 100
    m = build("sassnet", spatial_dims, total)
    disc = m.components()["discriminator"]
    disc.dropout.p = 0.0  # D's eval (generator) and train (own loss) passes then agree
    b = blob_batch(spatial_dims)
    seen = capture(m)
    out = m.training_step(b, step)
    prob, sdf = seen["logits"].softmax(1), seen["sdf"]
    x = torch.cat([b.image_l, b.image_u])
    with torch.no_grad():
        d_u, d_all = disc(sdf[2:], b.image_u), disc(sdf, x)  # the discriminator sees SDF maps, not probabilities
    dice = fg_dice(prob[:2], b.label_l)
    mse = ((sdf[:2] - sdf_targets(b.label_l)) ** 2).mean()
    adv = _nll(d_u, torch.ones(2, dtype=torch.long))
    dis = _nll(d_all, torch.tensor([1, 1, 0, 0]))
    weight = 0.01 * math.exp(-5 * (1 - step / total) ** 2)
    assert float(out.logs["loss_sdf"]) == pytest.approx(float(mse), rel=1e-5)
    assert float(out.logs["loss_adv"]) == pytest.approx(float(adv), rel=1e-5)
    assert float(out.logs["loss_disc"]) == pytest.approx(float(dis), rel=1e-5)
    expected = dice + 0.3 * mse + weight * adv + dis
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_adversary_trains_the_sdf_head_and_never_itself_through_the_generator_term():
    m = build("sassnet")
    disc, head = m.components()["discriminator"], m.components()["sdf_head"]
    disc.dropout.p = 0.0
    b = blob_batch()
    seen = capture(m)
    out = m.training_step(b, 99)
    g_disc = torch.autograd.grad(out.loss, list(disc.parameters()), retain_graph=True)
    g_head = torch.autograd.grad(out.loss, list(head.parameters()))
    # D's gradient is that of its own loss on the detached SDFs, nothing from the generator's term.
    x = torch.cat([b.image_l, b.image_u])
    own = torch.autograd.grad(_nll(disc(seen["sdf"], x), torch.tensor([1, 1, 0, 0])), list(disc.parameters()))
    for got, exp in zip(g_disc, own):
        torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-8)
    # Without the adversarial term the SDF head's gradient changes: the shape-aware adversary reaches it.
    m3 = build("sassnet", adv_weight=0.0)
    m3.components()["discriminator"].dropout.p = 0.0
    g_head0 = torch.autograd.grad(m3.training_step(b, 99).loss, list(m3.components()["sdf_head"].parameters()))
    assert not all(torch.allclose(a, c) for a, c in zip(g_head, g_head0))


def test_resume_is_bit_identical_with_head_discriminator_and_adam_state(tmp_path):
    state = assert_resume_identical(tmp_path, "sassnet")
    assert {"student", "sdf_head", "discriminator"} <= set(state["modules"]) and state["optimizers"]["adam"]["state"]


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="sassnet.ndf"):
        get_method("sassnet").config_class(ndf=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cli_trains_and_evaluates(tmp_path, spatial_dims):
    smoke(tmp_path, "sassnet", spatial_dims, ("sassnet.ndf=8",), iterations=2, split="val")
