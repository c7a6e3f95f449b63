"""Engine: a few iterations of every stage on tiny stand-in data (2D, 3D), resume, NaN stop, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from _tiny import MODEL2D, MODEL3D, assert_resume_identical, params_for, read_log, run_method, tiny_data
from arco._checks import ArcoError, CheckpointError, ConfigError
from arco.checkpoint import load_checkpoint, load_predictor
from arco.engine import EngineConfig, OptimConfig, ScheduleConfig, StageSpec, lr_factor
from arco.methods import get_method


@pytest.mark.parametrize("name", ["supervised", "arco-pretrain", "arco-finetune"])
def test_stage_2d_learns_and_writes_run_folder(tmp_path, name):
    data = tiny_data(2)
    _, summary = run_method(tmp_path, name, data, 30)
    rows = read_log(tmp_path / "log.csv")
    cls = get_method(name)
    # The log's columns come from the method's declaration, nothing else.
    names = [*cls.loss_names, *cls.metric_names, "grad_norm", "grad_norm_max"]
    assert list(rows[0]) == ["iteration", "stage", "lr", "loss", *names, "val_dice"]
    first, last = float(rows[0]["loss_sup"]), float(rows[-1]["loss_sup"])
    assert last < 0.8 * first, (first, last)
    for f in ("config.yaml", "split.json", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / f).is_file(), f
    assert summary["finished"] and summary["best_val_dice"] is not None and summary["method"] == name
    assert rows[-1]["val_dice"] != "" and rows[0]["val_dice"] == ""
    model, meta = load_predictor(tmp_path)
    assert meta["data"]["num_classes"] == 3
    assert model(torch.zeros(1, 1, 32, 32)).logits.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", ["supervised", "arco-finetune"])
def test_stage_3d_learns(tmp_path, name):
    data = tiny_data(3)
    run_method(tmp_path, name, data, 20, model=MODEL3D)
    rows = read_log(tmp_path / "log.csv")
    assert float(rows[-1]["loss_sup"]) < float(rows[0]["loss_sup"])


@pytest.mark.parametrize("name", ["arco-pretrain", "arco-finetune"])
def test_resume_gives_identical_weights(tmp_path, name):
    assert_resume_identical(tmp_path, name, iterations=6, stop_at=3)
    rows = read_log(tmp_path / "cut" / "log.csv")
    assert [r["iteration"] for r in rows] == ["2", "3", "4", "6"]  # 3: the interrupted run's last row


def test_resume_refuses_another_methods_checkpoint(tmp_path):
    data = tiny_data(2)
    run_method(tmp_path, "supervised", data, 2, stop_at=1)
    with pytest.raises(CheckpointError, match="belongs to stage 'supervised' / method 'supervised'"):
        run_method(tmp_path, "arco-pretrain", data, 2, resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = tiny_data(2)
    eng = EngineConfig(device="cpu", log_every=2, val_every=2, progress=False)
    with pytest.raises(ArcoError, match=r"NaN/inf between iterations 5 and 6.*last good checkpoint"):
        run_method(tmp_path, "supervised", data, 10, engine=eng, nan_at=4)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["predictor"]["state_dict"].values() if v.is_floating_point())


def test_stage2_initialises_declared_modules_from_stage1(tmp_path):
    data = tiny_data(2)
    pre, _ = run_method(tmp_path / "pre", "arco-pretrain", data, 2)
    fine, _ = run_method(
        tmp_path / "fine",
        "arco-finetune",
        data,
        1,
        init_from=tmp_path / "pre" / "checkpoints" / "last.pt",
        lr=1e-12,
        optim=OptimConfig(momentum=0.0, weight_decay=0.0),
    )
    w_pre = pre.components()["projector"].state_dict()["0.weight"]
    assert torch.allclose(fine.components()["projector"].state_dict()["0.weight"], w_pre)
    # The stage-1-only local projector is not part of stage 2; stage 2's own heads start fresh.
    assert "local_projector" not in fine.components()


def test_lr_schedules():
    poly = ScheduleConfig(iterations=100, lr_schedule="poly")
    step = ScheduleConfig(iterations=10**5, lr_schedule="step", lr_step=2500)
    const = ScheduleConfig(iterations=10, lr_schedule="constant")
    assert lr_factor(poly, 0) == 1.0 and lr_factor(poly, 100) == 0.0
    assert lr_factor(poly, 50) == pytest.approx(0.5**0.9)
    assert lr_factor(step, 2499) == 1.0 and lr_factor(step, 2500) == pytest.approx(0.1)
    assert lr_factor(const, 9) == 1.0


def test_lr_follows_the_schedule_in_the_log(tmp_path):
    data = tiny_data(2)
    run_method(tmp_path, "supervised", data, 10, lr=0.1)
    rows = read_log(tmp_path / "log.csv")
    # The row at iteration 5 was written after the step at index 4: lr = 0.1 * (1 - 4/10)^0.9.
    assert float(rows[0]["lr"]) == pytest.approx(0.1 * 0.6**0.9, rel=1e-4)


def test_bad_engine_and_schedule_values_are_named():
    with pytest.raises(ValueError, match="engine.precision"):
        EngineConfig(device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="schedule.iterations"):
        ScheduleConfig(iterations=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        ScheduleConfig(lr_schedule="cosine")


def test_undeclared_log_name_is_an_error(tmp_path, monkeypatch):
    from arco.methods.supervised import SupervisedMethod

    original = SupervisedMethod.training_step

    def step(self, batch, it):
        out = original(self, batch, it)
        return type(out)(out.loss, {**out.logs, "surprise": out.loss.detach()})

    monkeypatch.setattr(SupervisedMethod, "training_step", step)
    with pytest.raises(ValueError, match=r"logged \['surprise'\] but declares"):
        run_method(tmp_path, "supervised", tiny_data(2), 2)


def test_summary_json(tmp_path):
    data = tiny_data(2)
    run_method(tmp_path, "supervised", data, 3)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["stage"] == "supervised" and s["completed_iterations"] == 3 and s["method"] == "supervised"


def test_grad_clip_bounds_one_spiking_step_and_leaves_small_ones_alone():
    # A clip caps the global norm of a spiking step and does nothing to ordinary steps; the norm before clipping is
    # returned (the engine logs it).
    from arco.engine.optim import Optimizers

    def update(scale: float, clip: float) -> float:
        w = torch.nn.Parameter(torch.ones(10))
        opt = Optimizers([{"params": [w]}], OptimConfig(weight_decay=0.0), lr=0.1)
        opt.zero_grad()
        (scale * w).sum().backward()  # gradient norm = scale * sqrt(10)
        norm = opt.step(torch.amp.GradScaler("cpu", enabled=False), clip)
        assert float(norm) == pytest.approx(scale * 10**0.5, rel=1e-5)
        return float((w.detach() - 1).norm())

    spike = 500.0 / 10**0.5
    assert update(spike, 0.0) == pytest.approx(0.1 * 500.0, rel=1e-5)  # unclipped: lr x norm
    assert update(spike, 12.0) == pytest.approx(0.1 * 12.0, rel=1e-5)  # clipped to the bound
    assert update(1.0 / 10**0.5, 12.0) == pytest.approx(0.1 * 1.0, rel=1e-5)  # below the bound: unchanged


def test_grad_clip_comes_from_the_method_unless_the_config_sets_it(tmp_path):
    # optim.grad_clip None (default) takes the method's own default (0 for the built-in methods); a number overrides.
    from arco.engine.loop import _Trainer
    from arco.methods.supervised import SupervisedMethod

    data = tiny_data(2)

    def clip(optim: OptimConfig, method_default: float) -> float:
        monkey = type("Clipped", (SupervisedMethod,), {"grad_clip": method_default})
        method = monkey(params_for("supervised"), 3, 2, MODEL2D)
        stage = StageSpec("s", ScheduleConfig(iterations=1, batch_labeled=1, batch_unlabeled=1))
        return _Trainer(method, data, stage, optim, EngineConfig(device="cpu"), tmp_path, {}, "default").grad_clip

    assert clip(OptimConfig(), 0.0) == 0.0 and clip(OptimConfig(), 5.0) == 5.0
    assert clip(OptimConfig(grad_clip=12.0), 0.0) == 12.0 and clip(OptimConfig(grad_clip=0.0), 5.0) == 0.0


@pytest.mark.parametrize(
    ("save", "saved"),
    [
        ({}, [6]),  # val_every=0: last.pt at the end only
        ({"save_every": 4}, [4, 6]),
        ({"save_every_minutes": 1e-9}, [2, 4, 6]),  # due at every log row
    ],
)
def test_last_pt_is_written_every_save_every_without_validation(tmp_path, monkeypatch, save, saved):
    from arco.engine import loop

    seen: list[int] = []
    real = loop._Trainer.save_last

    def record(self, iteration):
        seen.append(iteration)
        real(self, iteration)

    monkeypatch.setattr(loop._Trainer, "save_last", record)
    eng = EngineConfig(device="cpu", log_every=2, val_every=0, progress=False, **save)
    run_method(tmp_path, "supervised", tiny_data(2), 6, engine=eng)
    assert seen == saved
    assert [r["iteration"] for r in read_log(tmp_path / "log.csv")] == ["2", "4", "6"]


def test_the_user_config_has_no_test_hooks():
    from dataclasses import fields

    from arco.config import load_config

    assert not {"nan_at", "stop_at"} & {f.name for f in fields(EngineConfig)}
    with pytest.raises(ConfigError, match=r"engine\.nan_at=3 was a test hook.*remove it"):
        load_config("demo", ["engine.nan_at=3"])
    assert load_config("demo", ["engine.nan_at=-1"]).engine.seed == 0  # old run configs wrote the no-op value
