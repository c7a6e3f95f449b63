"""Deep co-training: Jensen-Shannon and soft cross entropy by hand, FGSM views of the other network, the objective with
its gradients, CLI smoke, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _cli_runs import smoke
from _multinet import Capture, assert_same_gradients, sigmoid_ramp, sup_ref
from _tiny import assert_resume_identical
from arco.methods import Batch, ModelConfig, build_method
from arco.methods.dct import DCTConfig, cross_entropy_soft, js_divergence


def _h(*p: float) -> float:
    return -sum(x * math.log(x) for x in p)


def test_js_divergence_and_soft_cross_entropy_by_hand():
    l1 = torch.zeros(1, 2, 1, 1)  # (0.5, 0.5)
    l2 = torch.tensor([math.log(0.9), math.log(0.1)]).view(1, 2, 1, 1)
    expected = _h(0.7, 0.3) - 0.5 * (_h(0.5, 0.5) + _h(0.9, 0.1))
    assert float(js_divergence(l1, l2)) == pytest.approx(expected, rel=1e-5)
    assert float(js_divergence(l2, l2)) == pytest.approx(0.0, abs=1e-7)
    assert float(cross_entropy_soft(l2, l1)) == pytest.approx(math.log(2), rel=1e-6)  # H(p, uniform) = log 2
    assert float(cross_entropy_soft(l1, l2)) == pytest.approx(-0.5 * (math.log(0.9) + math.log(0.1)), rel=1e-5)


def test_objective_adversarial_views_and_gradients():
    torch.manual_seed(0)
    m = build_method("dct", DCTConfig(), 3, 2, ModelConfig(arch="unet"))
    m.setup(torch.device("cpu"), 0, 600)
    m.set_training(True)
    c1, c2 = Capture(m.student), Capture(m.student2)
    g = torch.Generator().manual_seed(6)
    b = Batch(torch.randn(2, 1, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g),
              torch.randn(2, 1, 32, 32, generator=g))  # fmt: skip
    out = m.training_step(b, 40)
    (x, g2), (_, g1) = c1.inputs, c2.inputs  # student: clean then net 2's view; student2: clean then net 1's view
    l1, l1_adv = (o.logits for o in c1.outputs)
    l2, l2_adv = (o.logits for o in c2.outputs)
    # each network is shown the OTHER network's FGSM image, built from its own targets (labels, then argmax)
    for logits, view in ((l1, g1), (l2, g2)):
        t = torch.cat([b.label_l, logits[2:].argmax(1)])
        grad = torch.autograd.grad(F.cross_entropy(logits, t), x, retain_graph=True)[0]
        assert torch.equal(view, (x + 0.02 * grad.sign()).detach())
    sup = sup_ref(l1[:2], b.label_l) + sup_ref(l2[:2], b.label_l)
    p1, p2 = l1[2:].softmax(1), l2[2:].softmax(1)
    mix = (p1 + p2) / 2
    ent = lambda p: -(p * p.log()).sum(1)  # noqa: E731
    cot = (ent(mix) - (ent(p1) + ent(p2)) / 2).mean()
    dif = -(l1.softmax(1) * l2_adv.log_softmax(1)).sum(1).mean() - (l2.softmax(1) * l1_adv.log_softmax(1)).sum(1).mean()
    ramp = sigmoid_ramp(40, 600, 80 / 600)
    expected = sup + 10 * ramp * cot + 0.5 * ramp * dif
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    params = [p for n in ("student", "student2") for p in m.components()[n].parameters()]
    assert_same_gradients(out.loss, expected, params, atol=1e-5)


def test_cli_smoke_2d(tmp_path):
    state = smoke(tmp_path, "dct", 2).state
    assert {"student", "student2"} <= set(state["modules"])


def test_resume_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "dct")
