"""DAN: the objective against an independent formula, gradient routing within one backward, the discriminator's
optimiser, resume, and the CLI on phantom2d / phantom3d."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _cli_runs import smoke
from _tiny import assert_resume_identical, build, read_log, run_method, tiny_data
from arco.checkpoint import load_checkpoint
from arco.methods import Batch, get_method


def batch(spatial_dims: int = 2, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    s = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    return Batch(
        torch.randn(2, 1, *s, generator=g),
        torch.randint(0, 3, (2, *s), generator=g),
        torch.randn(3, 1, *s, generator=g),
    )


def _dice(prob, label):
    y = F.one_hot(label, prob.shape[1]).movedim(-1, 1).float()
    dims = (0, *range(2, prob.dim()))
    return (1 - (2 * (prob * y).sum(dims) + 1e-5) / ((prob * prob).sum(dims) + y.sum(dims) + 1e-5)).mean()


def _nll(logits, target):
    return -torch.log_softmax(logits, 1)[torch.arange(len(target)), target].mean()


def _capture_logits(m):
    seen = {}

    def hook(_m, _i, out) -> None:
        seen.setdefault("logits", out.logits)

    m.components()["student"].register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_is_sup_plus_ramped_adversarial_plus_discriminator(spatial_dims):
    step, total = 30, 100
    m = build("dan", spatial_dims, total)
    disc = m.components()["discriminator"]
    disc.dropout.p = 0.0  # D's train and eval passes then agree, so the formula below is exact
    b = batch(spatial_dims)
    seen = _capture_logits(m)
    out = m.training_step(b, step)
    logits = seen["logits"].detach()
    x = torch.cat([b.image_l, b.image_u])
    prob = logits.softmax(1)
    with torch.no_grad():
        d_u, d_all = disc(prob[2:], b.image_u), disc(prob, x)
    sup = 0.5 * (F.cross_entropy(logits[:2], b.label_l) + _dice(prob[:2], b.label_l))
    adv = _nll(d_u, torch.ones(3, dtype=torch.long))  # unlabeled predictions called "labeled"
    dis = _nll(d_all, torch.tensor([1, 1, 0, 0, 0]))
    weight = 0.1 * math.exp(-5 * (1 - step / total) ** 2)
    assert float(out.logs["loss_sup"]) == pytest.approx(float(sup), rel=1e-5)
    assert float(out.logs["loss_adv"]) == pytest.approx(float(adv), rel=1e-5)
    assert float(out.logs["loss_disc"]) == pytest.approx(float(dis), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(sup + weight * adv + dis), rel=1e-5)


def test_one_backward_trains_each_network_only_by_its_own_term():
    m = build("dan")
    disc, student = m.components()["discriminator"], m.components()["student"]
    disc.dropout.p = 0.0
    b = batch()
    seen = _capture_logits(m)
    out = m.training_step(b, 50)
    d_params, s_params = list(disc.parameters()), list(student.parameters())
    g_disc = torch.autograd.grad(out.loss, d_params, retain_graph=True)
    g_student = torch.autograd.grad(out.loss, s_params, retain_graph=True, allow_unused=True)
    logits = seen["logits"]
    prob = logits.softmax(1)
    x = torch.cat([b.image_l, b.image_u])
    # The discriminator's gradient is that of its own loss on detached predictions, nothing from the adversarial term.
    expect_d = torch.autograd.grad(_nll(disc(prob.detach(), x), torch.tensor([1, 1, 0, 0, 0])), d_params)
    for got, exp in zip(g_disc, expect_d):
        torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-7)
    # The segmenter's gradient is that of L_sup + w * L_adv (D only passed through), nothing from L_D.
    weight = 0.1 * math.exp(-5 * (1 - 50 / 100) ** 2)
    seg = 0.5 * (F.cross_entropy(logits[:2], b.label_l) + _dice(prob[:2], b.label_l))
    seg = seg + weight * _nll(disc(prob[2:], b.image_u), torch.ones(3, dtype=torch.long))
    expect_s = torch.autograd.grad(seg, s_params, allow_unused=True)
    for got, exp in zip(g_student, expect_s):
        if exp is not None:
            torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-7)


def test_discriminator_uses_adam_099_at_a_constant_rate_and_the_log_shows_the_segmenters_lr(tmp_path):
    run_method(tmp_path, "dan", tiny_data(2), 4, lr=0.05)
    opt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["optimizers"]
    (adam,), (sgd,) = opt["adam"]["param_groups"], opt["sgd"]["param_groups"]
    assert adam["lr"] == pytest.approx(1e-4) and tuple(adam["betas"]) == (0.9, 0.99) and not adam["scheduled"]
    assert sgd["lr"] < 0.05  # the poly schedule decayed the segmenter's rate only
    rows = read_log(tmp_path / "log.csv")
    assert float(rows[-1]["lr"]) == pytest.approx(sgd["lr"], rel=1e-4)
    assert {"loss_adv", "loss_disc", "disc_acc"} <= set(rows[-1])


def test_resume_is_bit_identical_with_the_discriminator_and_its_adam_state(tmp_path):
    state = assert_resume_identical(tmp_path, "dan")
    assert {"student", "discriminator"} <= set(state["modules"]) and state["optimizers"]["adam"]["state"]


def test_bad_config_values_are_named():
    cls = get_method("dan").config_class
    with pytest.raises(ValueError, match="dan.disc_betas"):
        cls(disc_betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="dan.rampup"):
        cls(rampup=2.0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cli_trains_and_evaluates(tmp_path, spatial_dims):
    state = smoke(tmp_path, "dan", spatial_dims, ("dan.ndf=8",), iterations=2, split="val").state
    assert "discriminator" in state["modules"]
