"""URPC: the rectified consistency against SSL4MIS's formula, the whole objective, heads, CLI smoke (2D, 3D), resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from _cli_runs import smoke
from _multinet import (
    Capture,
    assert_same_gradients,
    sigmoid_ramp,
    sup_ref,
)
from _tiny import assert_resume_identical
from arco.methods import Batch, ModelConfig, build_method
from arco.methods.urpc import URPCConfig, rectified_consistency


def _ssl4mis(logits: list[torch.Tensor]) -> torch.Tensor:
    """SSL4MIS's lines: KLDivLoss(reduction='none') of log(p_s) against the mean, exp(-variance) weighting."""
    kl = nn.KLDivLoss(reduction="none")
    soft = [x.softmax(1) for x in logits]
    preds = sum(soft) / len(soft)
    total = 0
    for p in soft:
        variance = torch.sum(kl(torch.log(p), preds), dim=1, keepdim=True)
        exp_variance = torch.exp(-variance)
        dist = (preds - p) ** 2
        total = total + torch.mean(dist * exp_variance) / (torch.mean(exp_variance) + 1e-8) + torch.mean(variance)
    return total / len(soft)


def test_rectified_consistency_by_hand_one_pixel_two_outputs():
    # p1 = (0.5, 0.5), p2 = (0.9, 0.1): mean m = (0.7, 0.3)
    l1 = torch.zeros(1, 2, 1, 1)
    l2 = torch.tensor([math.log(0.9), math.log(0.1)]).view(1, 2, 1, 1)
    m = (0.7, 0.3)
    u1 = sum(a * math.log(a / b) for a, b in zip(m, (0.5, 0.5)))
    u2 = sum(a * math.log(a / b) for a, b in zip(m, (0.9, 0.1)))
    # per output: mean over the 2 classes of w (m - p)^2, divided by w (one pixel) -> plain mean, plus u
    d1 = ((0.7 - 0.5) ** 2 + (0.3 - 0.5) ** 2) / 2
    d2 = ((0.7 - 0.9) ** 2 + (0.3 - 0.1) ** 2) / 2
    w1, w2 = math.exp(-u1), math.exp(-u2)
    expected = ((d1 * w1 / (w1 + 1e-8) + u1) + (d2 * w2 / (w2 + 1e-8) + u2)) / 2
    assert float(rectified_consistency([l1, l2])) == pytest.approx(expected, rel=1e-5)
    assert float(rectified_consistency([l1, l1, l1])) == pytest.approx(0.0, abs=1e-7)


def test_rectified_consistency_matches_ssl4mis_and_its_gradients():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 3, 5, 4, generator=g, requires_grad=True) for _ in range(4)]
    ours, ref = rectified_consistency(logits), _ssl4mis(logits)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert_same_gradients(ours, ref, logits)


@pytest.mark.parametrize("dims", [2, 3])
def test_objective_on_the_pyramid_outputs(dims):
    torch.manual_seed(0)
    model = ModelConfig(arch="unet" if dims == 2 else "vnet", n_filters=4)
    m = build_method("urpc", URPCConfig(), 3, dims, model)
    m.setup(torch.device("cpu"), 0, 100)
    m.set_training(True)
    assert m.cfg.rampup == (1.0 if dims == 2 else 2.0)  # SSL4MIS: 200 / 400 epochs of 150 iterations over 30k
    kernel = m.pyramid.heads[0].kernel_size[0]
    assert kernel == (3 if dims == 2 else 1) and m.pyramid.mode == ("nearest" if dims == 2 else "trilinear")
    main, heads = Capture(m.student), Capture(m.pyramid)
    g = torch.Generator().manual_seed(3)
    s = (32, 32) if dims == 2 else (16, 16, 16)
    b = Batch(torch.randn(2, 1, *s, generator=g), torch.randint(0, 3, (2, *s), generator=g),
              torch.randn(2, 1, *s, generator=g))  # fmt: skip
    out = m.training_step(b, 40)
    outputs = [main.outputs[0].logits, *heads.outputs[0]]
    assert len(outputs) == 4 and all(o.shape[2:] == s for o in outputs)
    sup = sum(sup_ref(o[:2], b.label_l) for o in outputs) / 4
    w = 0.1 * sigmoid_ramp(40, 100, m.cfg.rampup)
    expected = sup + w * _ssl4mis([o[2:] for o in outputs])
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    params = [p for n in ("student", "pyramid") for p in m.components()[n].parameters()]
    assert_same_gradients(out.loss, expected, params)


def test_heads_read_perturbed_features_only_in_training():
    m = build_method("urpc", URPCConfig(), 3, 2, ModelConfig(arch="unet"))
    m.setup(torch.device("cpu"), 0, 10)
    f = [torch.rand(2, c, 32 // s, 32 // s) + 1 for c, s in zip((128, 64, 32), (8, 4, 2))]
    p8, p4, p2 = m._perturb(f)
    assert 0.4 < float((p8 == 0).float().mean()) < 0.6  # dropout 0.5 at /8
    assert bool(((p4 == 0).all(1) | (p4 == f[1]).all(1)).all())  # feature dropout at /4
    assert bool((p2 != f[2]).all())  # feature noise at /2
    off = build_method("urpc", URPCConfig(perturb=False), 3, 2, ModelConfig(arch="unet"))
    assert all(a is b for a, b in zip(off._perturb(f), f))


def test_cli_smoke_2d(tmp_path):
    state = smoke(tmp_path, "urpc", 2).state
    assert {"student", "pyramid"} <= set(state["modules"])


def test_cli_smoke_3d(tmp_path):
    smoke(tmp_path, "urpc", 3)


def test_resume_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "urpc")
