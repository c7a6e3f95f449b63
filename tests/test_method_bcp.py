"""BCP: mix_loss against a per-class reference (2D and 3D forms), both stages' objectives on stubs with a known
box, the context box, largest-component pseudo-labels, the recipe, CLI runs in 2D and 3D, and resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _baseline_checks import TEACHER, Stub, batch, install, stubbed
from _cli_runs import smoke
from _tiny import assert_resume_identical, build
from arco.methods import bcp, get_recipe


def ref_mix_loss(logits, label, inside, w_out, w_in, per_image=False):
    """BCP's mix_loss written out region by region, class by class (and image by image for the 3D form)."""
    p = logits.double().softmax(1)
    ce = F.cross_entropy(logits.double(), label, reduction="none")
    total = 0.0
    for weight, region in ((w_out, ~inside), (w_in, inside)):
        m = region.expand_as(label)
        ce_r = ce[m].sum() / (m.sum() + 1e-16)
        dices = []
        for c in range(logits.shape[1]):
            y = (label == c).double()
            if per_image:
                for i in range(logits.shape[0]):
                    mi = m[i].double()
                    inter = (p[i, c] * y[i] * mi).sum()
                    dices.append(1 - (2 * inter + 1e-5) / (((p[i, c] + y[i]) * mi).sum() + 1e-5))
            else:
                md = m.double()
                inter = (p[:, c] * y * md).sum()
                dices.append(1 - (2 * inter + 1e-10) / ((p[:, c] ** 2 * md).sum() + (y * md).sum() + 1e-10))
        total = total + weight * (torch.stack(dices).mean() + ce_r)
    return 0.5 * total


def _box(spatial_dims: int, size: int = 8) -> torch.Tensor:
    inside = torch.zeros((size,) * spatial_dims, dtype=torch.bool)
    inside[(slice(1, 6),) * spatial_dims] = True
    return inside


@pytest.mark.parametrize("per_image", [False, True])
def test_mix_loss_matches_the_reference(per_image):
    g = torch.Generator().manual_seed(0)
    logits, label = torch.randn(3, 3, 8, 8, generator=g), torch.randint(0, 3, (3, 8, 8), generator=g)
    inside = _box(2)
    got = bcp.mix_loss(logits, label, inside, 0.5, 1.0, per_image)
    assert float(got) == pytest.approx(float(ref_mix_loss(logits, label, inside, 0.5, 1.0, per_image)), rel=1e-6)
    swapped = bcp.mix_loss(logits, label, inside, 1.0, 0.5, per_image)
    assert abs(float(swapped) - float(got)) > 1e-3  # the region weights matter


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pretrain_pastes_a_labeled_box_and_trains_on_the_mixed_label(monkeypatch, spatial_dims):
    monkeypatch.setattr(bcp, "context_box", lambda *a, **k: _box(spatial_dims))
    m, s, _ = stubbed("bcp-pretrain", spatial_dims, teacher=False)
    b = batch(spatial_dims, bl=4, bu=0)
    out = m.training_step(b, 5)
    (xa, xb), (ya, yb) = b.image_l.split(2), b.label_l.split(2)
    inside = _box(spatial_dims)
    mixed, label = torch.where(inside, xb, xa), torch.where(inside, yb, ya)
    assert torch.equal(s.inputs[0], mixed)
    if spatial_dims == 2:  # ACDC: mix_loss with weight 1 on both regions
        expected = ref_mix_loss(s.closed_form(mixed), label, inside, 1.0, 1.0)
    else:  # LA: (CE + Dice) / 2 of the mixed label over the whole volume
        expected = ref_mix_loss(s.closed_form(mixed), label, torch.zeros_like(inside), 1.0, 0.0, per_image=True)
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_selftrain_bidirectional_objective(monkeypatch, spatial_dims):
    monkeypatch.setattr(bcp, "context_box", lambda *a, **k: _box(spatial_dims))
    m, s, t = stubbed("bcp-selftrain", spatial_dims, largest_component=False)
    b = batch(spatial_dims, bl=4, bu=4)
    out = m.training_step(b, 7)
    (la, lb), (ya, yb), (ua, ub) = b.image_l.split(2), b.label_l.split(2), b.image_u.split(2)
    pa, pb = t.closed_form(ua).argmax(1), t.closed_form(ub).argmax(1)
    inside = _box(spatial_dims)
    x_u, x_l = torch.where(inside, la, ua), torch.where(inside, ub, lb)
    assert torch.equal(s.inputs[0], torch.cat([x_u, x_l]))
    per_image = spatial_dims == 3
    loss_u = ref_mix_loss(s.closed_form(x_u), torch.where(inside, ya, pa), inside, 0.5, 1.0, per_image)
    loss_l = ref_mix_loss(s.closed_form(x_l), torch.where(inside, pb, yb), inside, 1.0, 0.5, per_image)
    assert float(out.logs["loss_mix_u"]) == pytest.approx(float(loss_u), rel=1e-5)
    assert float(out.logs["loss_mix_l"]) == pytest.approx(float(loss_l), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(loss_u + loss_l), rel=1e-5)


@pytest.mark.parametrize("shape", [(48, 30), (20, 24, 18)])
def test_context_box_has_two_thirds_of_each_side_at_a_uniform_place(shape):
    g = torch.Generator().manual_seed(0)
    starts = []
    for _ in range(300):
        box = bcp.context_box(shape, 2 / 3, g, torch.device("cpu"))
        for ax, n in enumerate(shape):
            line = box.any(dim=tuple(d for d in range(len(shape)) if d != ax))
            idx = line.nonzero().flatten()
            assert len(idx) == int(n * 2 / 3) and int(idx[-1] - idx[0]) + 1 == len(idx)
            starts.append((ax, int(idx[0])))
    for ax, n in enumerate(shape):  # numpy randint(0, n - size): every start in 0 .. n - size - 1
        seen = {s for a, s in starts if a == ax}
        assert seen == set(range(n - int(n * 2 / 3)))


def test_largest_components_per_image_and_class():
    lab = torch.zeros(2, 7, 7, dtype=torch.long)
    lab[0, 0:2, 0:2] = 1  # class 1: 4 pixels ...
    lab[0, 5, 5] = 1  # ... and 1 pixel: removed
    lab[0, 3, 3] = lab[0, 4, 4] = 2  # class 2: diagonal neighbours are one component (8-connectivity)
    lab[0, 6, 0] = 2  # a lone class-2 pixel: removed
    lab[1, 6, 6] = 1  # image 1: its only class-1 pixel stays (images do not compete)
    out = bcp.largest_components(lab, 3)
    expected = lab.clone()
    expected[0, 5, 5] = 0
    expected[0, 6, 0] = 0
    assert torch.equal(out, expected)
    vol = torch.zeros(1, 5, 5, 5, dtype=torch.long)
    vol[0, 0, 0, 0] = vol[0, 1, 1, 1] = 1  # 26-connected in 3D
    vol[0, 4, 4, 4] = 1
    kept = bcp.largest_components(vol, 2)
    assert int(kept.sum()) == 2 and int(kept[0, 4, 4, 4]) == 0


def test_pseudo_labels_keep_the_largest_blob():
    m = build("bcp-selftrain")
    install(m, "teacher", Stub(*TEACHER))  # x = 3 -> class 1, x = -3 -> class 0
    u = torch.full((1, 1, 8, 8), -3.0)
    u[0, 0, :3, :3] = 3.0
    u[0, 0, 6, 6] = 3.0
    pseudo = m.pseudo_labels(u)
    assert int((pseudo == 1).sum()) == 9 and int(pseudo[0, 6, 6]) == 0


def test_selftrain_starts_with_the_teacher_equal_to_the_student():
    m = build("bcp-selftrain")
    with torch.no_grad():
        for p in m.components()["student"].parameters():
            p.mul_(1.5)  # as if initialised from bcp-pretrain's checkpoint
    m.training_step(batch(bl=2, bu=2, size=32), 0)
    t, s = dict(m.components()["teacher"].named_parameters()), dict(m.components()["student"].named_parameters())
    assert all(torch.equal(t[k], s[k]) for k in t)


def test_defaults_are_bcp():
    assert bcp.BCPPretrainConfig() == bcp.BCPPretrainConfig(mask_ratio=2 / 3)
    assert bcp.BCPConfig() == bcp.BCPConfig(mask_ratio=2 / 3, u_weight=0.5, ema=0.99, largest_component=True)


def test_recipe_and_its_iteration_shares():
    from arco.config import load_config

    recipe = get_recipe("bcp")
    assert [(s.name, s.method, s.share) for s in recipe.stages] == [
        ("pretrain", "bcp-pretrain", 0.25),
        ("selftrain", "bcp-selftrain", 0.75),
    ]
    cfg = load_config("phantom2d", ["budget=400"], method="bcp")  # a run's length, shared 1:3
    assert [(s.name, s.schedule.iterations) for s in cfg.stages] == [("pretrain", 100), ("selftrain", 300)]
    with pytest.warns(UserWarning, match="budget=N"):  # iterations is one stage's length: no split without a budget
        cfg = load_config("phantom2d", ["schedule.iterations=400"], method="bcp")
    assert [(s.name, s.schedule.iterations) for s in cfg.stages] == [("pretrain", 400), ("selftrain", 400)]


def test_too_small_batches_are_named_errors():
    m, _, _ = stubbed("bcp-selftrain")
    with pytest.raises(ValueError, match="batch_unlabeled >= 2"):
        m.training_step(batch(bl=2, bu=1), 0)
    p, _, _ = stubbed("bcp-pretrain", teacher=False)
    with pytest.raises(ValueError, match="batch_labeled >= 2"):
        p.training_step(batch(bl=1, bu=0), 0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_recipe_cli_trains_both_stages_and_evaluates(tmp_path, spatial_dims):
    _, rows, summary, _ = smoke(tmp_path, "bcp", spatial_dims, iterations=2)
    assert list(rows[0])[3:6] == ["loss", "loss_mix_u", "loss_mix_l"]
    assert (tmp_path / "run" / "pretrain" / "checkpoints" / "last.pt").is_file()
    assert 0.0 <= summary["mean"]["dice"] <= 1.0


def test_resume_is_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "bcp-selftrain")
