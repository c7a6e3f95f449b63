"""UniMatch: the weak-to-strong objective on a stub with known boxes and feature perturbation, the masked Dice,
CutMix boxes, jitter and channel dropout statistics, the CLI run, and bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch

from _baseline_checks import batch, ref_dice, stubbed
from _cli_runs import smoke
from _tiny import assert_resume_identical, build
from arco.methods import unimatch


def test_objective_with_known_boxes_and_feature_perturbation(monkeypatch):
    size = 8
    box1 = torch.zeros(2, size, size, dtype=torch.bool)
    box1[0, 2:6, 1:5] = True  # item 0 gets a box from item 1, item 1 none
    box2 = torch.zeros(2, size, size, dtype=torch.bool)
    box2[1, :3, :] = True
    boxes = iter([box1, box2])
    monkeypatch.setattr(unimatch, "cutmix_boxes", lambda *a, **k: next(boxes))
    monkeypatch.setattr(unimatch, "channel_dropout", lambda x, p, g: 2.0 * x)  # a known perturbation
    m, s, _ = stubbed("unimatch", teacher=False, conf_thresh=0.6, jitter_p=0.0, blur_p=0.0)
    b = batch(bu=2, size=size)
    out = m.training_step(b, 0)
    u, partner = b.image_u, torch.tensor([1, 0])  # two images: the cyclic shift pairs them
    p_u = s.closed_form(u).double().softmax(1)
    conf_w, pseudo_w = p_u.max(1)
    views = [torch.where(bx[:, None], u[partner], u) for bx in (box1, box2)]
    assert torch.allclose(s.inputs[-1], torch.cat(views), atol=1e-6)  # strong views: exactly the pasted boxes
    losses_s = []
    for view, bx in zip(views, (box1, box2)):
        pseudo = torch.where(bx, pseudo_w[partner], pseudo_w)
        conf = torch.where(bx, conf_w[partner], conf_w)
        losses_s.append(ref_dice(s.closed_form(view), pseudo, conf >= 0.6))
    loss_fp = ref_dice(s.closed_form(2.0 * u), pseudo_w, conf_w >= 0.6)
    logits_x = s.closed_form(b.image_l)
    loss_x = 0.5 * (torch.nn.functional.cross_entropy(logits_x.double(), b.label_l) + ref_dice(logits_x, b.label_l))
    expected = 0.5 * (loss_x + 0.25 * (losses_s[0] + losses_s[1]) + 0.5 * loss_fp)
    kept = float((conf_w >= 0.6).double().mean())
    assert 0.05 < kept < 0.95  # the confidence mask matters
    assert float(out.logs["confident"]) == pytest.approx(kept)
    assert float(out.logs["loss_fp"]) == pytest.approx(float(loss_fp), rel=1e-5)
    assert float(out.logs["loss_s"]) == pytest.approx(float(0.5 * (losses_s[0] + losses_s[1])), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_defaults_are_unimatch_medical():
    assert unimatch.UniMatchConfig() == unimatch.UniMatchConfig(
        conf_thresh=0.95, weight_s=0.25, weight_fp=0.5, sup_weight=0.5, fp_dropout=0.5, cutmix_p=0.5,
        cutmix_area=(0.02, 0.4), cutmix_ratio=(0.3, 1 / 0.3), jitter_p=0.8, brightness=0.5, contrast=0.5,
        blur_p=0.5, blur_sigma=(0.1, 2.0),
    )  # fmt: skip


def test_masked_dice_ignores_unkept_pixels_and_is_zero_when_nothing_is_kept():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 3, 6, 6, generator=g), torch.randint(0, 3, (2, 6, 6), generator=g)
    keep = torch.rand(2, 6, 6, generator=g) > 0.5
    got = unimatch.masked_dice_loss(logits, target, keep)
    assert float(got) == pytest.approx(float(ref_dice(logits, target, keep)), rel=1e-5)
    changed = logits.clone()
    changed[~keep.unsqueeze(1).expand_as(changed)] = 9.0  # only ignored pixels change
    assert float(unimatch.masked_dice_loss(changed, target, keep)) == pytest.approx(float(got), rel=1e-6)
    assert float(unimatch.masked_dice_loss(logits, target, torch.zeros_like(keep))) == 0.0


def test_cutmix_boxes_fit_with_their_area_ratio_and_probability():
    n, h, w = 4000, 64, 48
    boxes = unimatch.cutmix_boxes(n, (h, w), torch.Generator().manual_seed(1), torch.device("cpu"), 0.5,
                                  (0.02, 0.4), (0.3, 1 / 0.3))  # fmt: skip
    has = boxes.flatten(1).any(1)
    # Binomial(n, 0.5): s.e. sqrt(0.25/n); z = 5
    assert float(has.double().mean()) == pytest.approx(0.5, abs=5 * math.sqrt(0.25 / n))
    rows, cols = boxes.any(2)[has], boxes.any(1)[has]
    bh, bw = rows.sum(1).double(), cols.sum(1).double()
    assert torch.equal(boxes[has].flatten(1).sum(1).double(), bh * bw)  # each one is a single rectangle
    area = bh * bw / (h * w)
    assert float(area.max()) <= 0.4 + 1e-9 and float(area.min()) >= 0.0
    # floor(sqrt(A/r)) x floor(sqrt(A·r)): the aspect ratio stays within [0.3, 1/0.3] up to the flooring
    ratio = bh / bw
    big = area > 0.05
    assert float(ratio[big].min()) > 0.25 and float(ratio[big].max()) < 4.0


def test_jitter_and_channel_dropout():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(64, 1, 16, 16, generator=g) * 3 - 1
    assert torch.equal(unimatch.jitter(x, g, 0.5, 0.5, p=0.0), x)
    y = unimatch.jitter(x, g, 0.5, 0.5, p=1.0)
    lo, hi = x.amin((1, 2, 3)), x.amax((1, 2, 3))
    assert bool((y.amin((1, 2, 3)) >= lo - 1e-5).all() and (y.amax((1, 2, 3)) <= hi + 1e-5).all())
    assert not torch.allclose(y, x)
    maps = torch.ones(200, 50, 4, 4)
    d = unimatch.channel_dropout(maps, 0.5, g)
    per_channel = d[:, :, 0, 0]
    assert torch.equal(d, per_channel[:, :, None, None].expand_as(d))  # whole channels (Dropout2d)
    assert set(per_channel.unique().tolist()) == {0.0, 2.0}
    n = per_channel.numel()  # Binomial(n, 0.5) zeroed channels: z = 5
    assert float((per_channel == 0).double().mean()) == pytest.approx(0.5, abs=5 * math.sqrt(0.25 / n))


def test_student_returns_to_training_mode_after_the_eval_pass():
    m = build("unimatch")
    m.training_step(batch(size=32), 0)
    assert m.components()["student"].training


def test_cli_trains_and_evaluates(tmp_path):
    _, rows, summary, _ = smoke(tmp_path, "unimatch", 2)
    assert list(rows[0])[3:8] == ["loss", "loss_sup", "loss_s", "loss_fp", "confident"]
    assert 0.0 <= summary["mean"]["dice"] <= 1.0


def test_resume_is_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "unimatch")
