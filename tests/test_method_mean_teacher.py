"""Mean Teacher: the objective on a hand-computable stub, the teacher's input noise, the EMA warm-up, CLI runs in
2D and 3D, and bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch

from _baseline_checks import batch, ref_sup, sigmoid_ramp, stubbed
from _cli_runs import smoke
from _tiny import assert_resume_identical, build


@pytest.mark.parametrize("step", [0, 30, 100])
def test_objective_is_sup_plus_ramped_softmax_mse(step):
    m, s, t = stubbed("mean-teacher", noise_std=0.0)
    b = batch()
    if step == 0:  # step 0 starts the teacher from the student: the target is the student's own prediction
        t = s
    out = m.training_step(b, step)
    sup = ref_sup(s.closed_form(b.image_l), b.label_l)
    p_s = s.closed_form(b.image_u).double().softmax(1)
    p_t = t.closed_form(b.image_u).double().softmax(1)
    cons = ((p_s - p_t) ** 2).mean()
    w = 0.1 * sigmoid_ramp(step, 100)
    assert float(out.logs["loss_sup"]) == pytest.approx(float(sup), rel=1e-5)
    assert float(out.logs["loss_cons"]) == pytest.approx(float(cons), rel=1e-5, abs=1e-12)
    assert float(out.loss.detach()) == pytest.approx(float(sup + w * cons), rel=1e-5)
    if step:
        assert float(cons) > 1e-3  # the consistency term is really there (so a changed weight shows)


def test_teacher_sees_clamped_gaussian_noise_and_the_student_the_clean_image():
    m, s, t = stubbed("mean-teacher")
    b = batch(bu=4, size=32)
    m.training_step(b, 10)
    assert torch.equal(s.inputs[0], torch.cat([b.image_l, b.image_u]))
    noise = t.inputs[0] - b.image_u
    assert noise.abs().max() <= 0.2 + 1e-6 and bool((noise.abs() > 0).all())
    # std of clamp(0.1 z, ±0.2) = 0.1·sqrt(E[min(z², 4)]); E[min(z², c²)] = erf(c/√2) - 2cφ(c) + 2c²(1 - Φ(c)).
    c, phi = 2.0, math.exp(-2.0) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(c / math.sqrt(2))
    expected = 0.1 * math.sqrt(math.erf(c / math.sqrt(2)) - 2 * c * phi + 2 * c * c * tail)
    n = noise.numel()  # 4096 draws: the sample std has relative s.e. about 1/sqrt(2n); allow z = 5
    assert float(noise.std()) == pytest.approx(expected, rel=5 / math.sqrt(2 * n))
    assert float(noise.mean()) == pytest.approx(0.0, abs=5 * expected / math.sqrt(n))


@pytest.mark.parametrize(("step", "momentum"), [(0, 0.0), (3, 0.75), (500, 0.99)])
def test_ema_uses_the_true_average_until_it_reaches_the_momentum(step, momentum):
    m = build("mean-teacher")
    teacher, student = m.components()["teacher"], m.components()["student"]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    m.after_optimizer_step(step)
    s_state = student.state_dict()
    for k, v in teacher.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, momentum * before[k] + (1 - momentum) * s_state[k], atol=1e-6), k


def test_stage_start_copies_the_student_into_the_teacher():
    m = build("mean-teacher")
    with torch.no_grad():
        for p in m.components()["student"].parameters():
            p.mul_(1.5)  # as if a previous stage had initialised the student only
    m.training_step(batch(size=32), 0)
    # parameters, not BN buffers: the student's forward after the copy updates its running statistics
    t, s = dict(m.components()["teacher"].named_parameters()), dict(m.components()["student"].named_parameters())
    assert all(torch.equal(t[k], s[k]) for k in t)


def test_defaults_are_ssl4mis():
    from arco.methods.mean_teacher import MeanTeacherConfig

    assert MeanTeacherConfig() == MeanTeacherConfig(
        ema=0.99, consistency=0.1, rampup=1.0, noise_std=0.1, noise_clip=0.2, sup_weight=0.5
    )


def test_bad_config_values_are_named():
    from arco.methods.mean_teacher import MeanTeacherConfig

    with pytest.raises(ValueError, match="ema"):
        MeanTeacherConfig(ema=1.0)
    with pytest.raises(ValueError, match="noise_clip"):
        MeanTeacherConfig(noise_clip=-0.1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cli_trains_and_evaluates(tmp_path, spatial_dims):
    _, rows, summary, _ = smoke(tmp_path, "mean-teacher", spatial_dims)
    assert list(rows[0])[3:6] == ["loss", "loss_sup", "loss_cons"]
    assert all(math.isfinite(float(r["loss_cons"])) for r in rows)
    assert 0.0 <= summary["mean"]["dice"] <= 1.0


def test_resume_is_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "mean-teacher")
