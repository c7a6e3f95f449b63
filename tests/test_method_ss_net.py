"""SS-Net: the separation loss and memory against the code's per-class loops, VAT, the step's composition, CLI smoke
(2D, 3D), resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _cli_runs import smoke
from _multinet import (
    Capture,
    assert_same_gradients,
    dice_ref,
    sigmoid_ramp,
)
from _tiny import assert_resume_identical
from arco.losses.separation import ClassSelectors, PrototypeMemory, separation_loss
from arco.methods import Batch, ModelConfig, build_method
from arco.methods.ss_net import SSNetConfig, soft_dice, vat_loss


def _mlp(sel: ClassSelectors, c: int, x: torch.Tensor) -> torch.Tensor:
    """Selector c as the code's nn.Sequential(Linear, BatchNorm1d (train mode), LeakyReLU(0.2), Linear)."""
    h = x @ sel.w1[c] + sel.b1[c]
    h = F.batch_norm(h, None, None, sel.gamma[c], sel.beta[c], training=True, eps=1e-5)
    return F.leaky_relu(h, 0.2) @ sel.w2[c].unsqueeze(1) + sel.b2[c]


def _separation_ref(features, labels, memory_rows, sel, num_classes):
    """The code's ``contrastive_class_to_class_learned_memory``, one class at a time (memory weights: exactly 1)."""
    loss = 0
    for c in range(num_classes):
        fc = features[labels == c]
        mc = memory_rows.get(c)
        if mc is None or fc.shape[0] <= 1 or mc.shape[0] <= 1:
            continue
        distances = 1 - F.normalize(fc, dim=1) @ F.normalize(mc, dim=1).t()
        w = torch.sigmoid(_mlp(sel, c - 1, fc.detach()))
        distances = distances * ((w.shape[0] / w.sum(dim=0)) * w).repeat(1, distances.shape[1])
        loss = loss + distances.mean()
    return loss / num_classes


def test_separation_loss_matches_the_per_class_loop_and_its_gradients():
    torch.manual_seed(0)
    k, e, d = 3, 5, 6  # 4 classes
    sel = ClassSelectors(k, d)
    feats = torch.randn(40, d, requires_grad=True)
    labels = torch.randint(0, 4, (40,))
    memory = torch.randn(k, e, d)
    count = torch.tensor([5, 1, 3])  # class 2 has a single memory row: skipped, like the code
    rows = {c + 1: memory[c, : count[c]] for c in range(k)}
    ours = separation_loss(feats, labels, memory, count, sel, 4)
    ref = _separation_ref(feats, labels, rows, sel, 4)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert_same_gradients(ours, ref, [feats, *sel.parameters()], atol=1e-6)
    # with no memory at all the loss is 0 but still attached (every parameter gets a gradient)
    empty = separation_loss(feats, labels, memory, torch.zeros(k, dtype=torch.long), sel, 4)
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_memory_keeps_the_lowest_scored_rows_and_absent_classes():
    torch.manual_seed(1)
    k, e, d = 2, 4, 3
    sel = ClassSelectors(k, d)
    mem = PrototypeMemory(k, e, d)
    old = torch.randn(k, e, d)
    mem.memory.copy_(old)
    mem.count.fill_(e)
    feats = torch.randn(30, d)
    labels = torch.tensor([1] * 10 + [0] * 20)  # class 1: 10 candidates (> E), class 2: none
    candidate = torch.ones(30, dtype=torch.bool)
    candidate[:2] = False  # two class-1 rows are not correct predictions
    mem.update(feats, labels, candidate, sel)
    rows = feats[2:10]
    with torch.no_grad():
        score = torch.sigmoid(_mlp(sel, 0, rows))[:, 0]
    expected = rows[score.argsort()[:e]]  # the code: torch.sort ascending, first E
    got = mem.memory[0]
    assert int(mem.count[0]) == e
    assert torch.allclose(got[got[:, 0].argsort()], expected[expected[:, 0].argsort()])
    assert torch.equal(mem.memory[1], old[1]) and int(mem.count[1]) == e  # absent class: unchanged
    # few candidates: all of them are stored, the count says how many
    mem.update(feats[:3], torch.tensor([2, 2, 2]), torch.ones(3, dtype=torch.bool), sel)
    assert int(mem.count[1]) == 3 and torch.allclose(mem.memory[1, :3].sum(0), feats[:3].sum(0))


def test_soft_dice_by_hand():
    p = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1)
    q = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1)
    d0 = 1 - 2 * 0.8 * 0.6 / (0.8**2 + 0.6**2)
    d1 = 1 - 2 * 0.2 * 0.4 / (0.2**2 + 0.4**2)
    assert float(soft_dice(p, q)) == pytest.approx((d0 + d1) / 2, rel=1e-6)


def test_vat_perturbs_by_xi_then_eps_and_leaves_bn_statistics_and_weights_alone():
    torch.manual_seed(0)
    from arco.models import MODELS

    net = MODELS.build("unet", in_channels=1, num_classes=3).train()
    x = torch.randn(2, 1, 32, 32)
    target = net(x).logits.softmax(1).detach()
    bn = net.encoder[0][1]
    before = (bn.running_mean.clone(), int(bn.num_batches_tracked))
    seen = Capture(net)
    loss = vat_loss(net, x, target, xi=10.0, eps=6.0, iterations=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(bn.running_mean, before[0]) and int(bn.num_batches_tracked) == before[1]
    assert all(p.grad is None for p in net.parameters())
    norms = [(inp - x).flatten(1).norm(dim=1) for inp in seen.inputs]
    assert torch.allclose(norms[0], torch.full((2,), 10.0), rtol=1e-4)
    assert torch.allclose(norms[1], torch.full((2,), 6.0), rtol=1e-4)
    expected = soft_dice(seen.outputs[1].logits.softmax(1), target)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_step_composition_and_defaults_per_dimension():
    torch.manual_seed(0)
    m = build_method("ss-net", SSNetConfig(), 3, 2, ModelConfig(arch="unet"))
    assert (m.cfg.consistency, m.cfg.rampup, m.cfg.epsilon) == (0.1, 1.0, 6.0)
    m3 = build_method("ss-net", SSNetConfig(), 2, 3, ModelConfig(arch="vnet", n_filters=4))
    assert (m3.cfg.consistency, m3.cfg.rampup, m3.cfg.epsilon) == (1.0, 0.4, 10.0)
    m.setup(torch.device("cpu"), 0, 100)
    m.set_training(True)
    cap = Capture(m.student)
    g = torch.Generator().manual_seed(5)
    b = Batch(torch.randn(2, 1, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g),
              torch.randn(2, 1, 32, 32, generator=g))  # fmt: skip
    out = m.training_step(b, 60)
    logits = cap.outputs[0].logits
    assert float(out.logs["loss_sup"]) == pytest.approx(float(dice_ref(logits[:2], b.label_l).detach()), rel=1e-5)
    w = 0.1 * sigmoid_ramp(60, 100, 1.0)
    logs = out.logs
    expected = logs["loss_sup"] + w * (logs["loss_lds"] + 0.1 * logs["loss_sep"])
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    # the memory was refreshed from correctly predicted foreground labeled pixels before the loss
    pred = logits[:2].argmax(1)
    for c in (1, 2):
        n = int(((pred == b.label_l) & (b.label_l == c)).sum())
        assert int(m.memory.count[c - 1]) == min(n, 32)


def test_cli_smoke_2d(tmp_path):
    state = smoke(tmp_path, "ss-net", 2).state
    assert {"student", "projector", "predictor", "selectors", "memory"} <= set(state["modules"])


def test_cli_smoke_3d(tmp_path):
    smoke(tmp_path, "ss-net", 3)


def test_resume_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "ss-net")
