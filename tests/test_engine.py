"""Engine: a few iterations of every stage on tiny stand-in data (2D, 3D), resume, NaN stop, checkpoints."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from arco._checks import ArcoError
from arco.checkpoint import load_checkpoint, load_predictor
from arco.data.volume import Volume
from arco.engine import EngineConfig, OptimConfig, fit, lr_factor, seed_everything
from arco.methods import (
    METHODS,
    ArcoFinetuneConfig,
    ArcoPretrainConfig,
    ModelConfig,
    SupervisedConfig,
)


def _phantom(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk (class 2) inside a ring (class 1) at a random centre, plus noise."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    centre = [rng.uniform(0.35 * s, 0.65 * s) for s in shape]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    size = rng.uniform(0.12, 0.2) * min(shape)
    label = np.where(r < size, 2, np.where(r < 1.7 * size, 1, 0)).astype(np.int64)
    image = (0.1 + 0.45 * label + 0.08 * rng.standard_normal(shape)).astype(np.float32)
    return image, label


class _TinySet(Dataset):
    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray] | None) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = torch.from_numpy(self.images[i])[None]
        lab = None if self.labels is None else torch.from_numpy(self.labels[i])
        if torch.rand(()) < 0.5:  # weak augmentation from the global RNG, as the real datasets do
            img = img.flip(-1)
            lab = None if lab is None else lab.flip(-1)
        img = img + 0.02 * torch.randn_like(img)
        return {"image": img} if lab is None else {"image": img, "label": lab}


@dataclass
class _TinyData:
    """Stand-in for arco.data.SegmentationData."""

    spatial_dims: int
    labeled: Any
    unlabeled: Any
    val: list
    test: list
    num_classes: int = 3
    name: str = "tiny"
    class_names: tuple = ("bg", "ring", "disk")
    normalization: str = "none"
    patch_size: tuple = ()
    split: dict = field(default_factory=lambda: {"labeled": ["a", "b"], "rule": "test"})


def tiny_data(spatial_dims: int = 2, n_labeled: int = 3, n_unlabeled: int = 4, seed: int = 0) -> _TinyData:
    rng = np.random.default_rng(seed)
    shape = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    lab = [_phantom(rng, shape) for _ in range(n_labeled)]
    unl = [_phantom(rng, shape)[0] for _ in range(n_unlabeled)]
    vol_shape = (3, *shape) if spatial_dims == 2 else shape
    val = []
    for k in range(2):
        if spatial_dims == 2:
            pairs = [_phantom(rng, shape) for _ in range(3)]
            img, seg = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        else:
            img, seg = _phantom(rng, vol_shape)
        val.append(Volume(case_id=f"val{k}", image=img, label=seg, spacing=None))
    return _TinyData(
        spatial_dims=spatial_dims,
        labeled=_TinySet([a for a, _ in lab], [b for _, b in lab]),
        unlabeled=_TinySet(unl, None),
        val=val,
        test=[],
        patch_size=shape,
    )


MODEL2D = ModelConfig(arch="unet", dim=16, hidden_dim=16)
MODEL3D = ModelConfig(arch="vnet", dim=16, hidden_dim=16, n_filters=4)
FAST = {
    "supervised": SupervisedConfig(iterations=0, batch=2),
    "pretrain": ArcoPretrainConfig(iterations=0, batch_labeled=2, batch_unlabeled=2, queue_size=8),
    "finetune": ArcoFinetuneConfig(
        iterations=0,
        batch_labeled=2,
        batch_unlabeled=2,
        num_queries=32,
        num_negatives=32,
        bank_size=64,
        nn_bank=8,
        nn_k=2,
        confidence=0.5,
    ),
}
METHOD_OF = {"supervised": "supervised", "pretrain": "arco-pretrain", "finetune": "arco-finetune"}


def run_stage(tmp_path, stage, data, iterations, model=MODEL2D, engine=None, optim=None, **kw):
    seed_everything(0)
    method = METHODS.build(
        METHOD_OF[stage], cfg=FAST[stage], num_classes=3, spatial_dims=data.spatial_dims, model=model
    )
    cfg = FAST[stage]
    bl = cfg.batch if stage == "supervised" else cfg.batch_labeled
    bu = 0 if stage == "supervised" else cfg.batch_unlabeled
    engine = engine or EngineConfig(device="cpu", log_every=5, val_every=0, progress=False)
    summary = fit(
        method,
        data,
        stage=stage,
        iterations=iterations,
        batch_labeled=bl,
        batch_unlabeled=bu,
        optim=optim or OptimConfig(lr=0.05),
        engine=engine,
        run_dir=tmp_path,
        config={"test": True},
        **kw,
    )
    return method, summary


def read_log(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("stage", ["supervised", "pretrain", "finetune"])
def test_stage_2d_learns_and_writes_run_folder(tmp_path, stage):
    data = tiny_data(2)
    _, summary = run_stage(tmp_path, stage, data, 30)
    rows = read_log(tmp_path / "log.csv")
    assert list(rows[0]) == [
        "iteration",
        "stage",
        "lr",
        "loss",
        "loss_sup",
        "loss_contrast",
        "loss_unsup",
        "loss_nn",
        "loss_inst",
        "val_dice",
    ]
    first, last = float(rows[0]["loss_sup"]), float(rows[-1]["loss_sup"])
    assert last < 0.8 * first, (first, last)
    for name in ("config.yaml", "split.json", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / name).is_file(), name
    assert summary["finished"] and summary["best_val_dice"] is not None
    assert rows[-1]["val_dice"] != "" and rows[0]["val_dice"] == ""
    model, meta = load_predictor(tmp_path)
    assert meta["data"]["num_classes"] == 3
    assert model(torch.zeros(1, 1, 32, 32)).logits.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("stage", ["supervised", "finetune"])
def test_stage_3d_learns(tmp_path, stage):
    data = tiny_data(3)
    run_stage(tmp_path, stage, data, 20, model=MODEL3D)
    rows = read_log(tmp_path / "log.csv")
    assert float(rows[-1]["loss_sup"]) < float(rows[0]["loss_sup"])


def _states(method) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, m in method.modules().items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_resume_gives_identical_weights(tmp_path, stage):
    data = tiny_data(2)
    eng = EngineConfig(device="cpu", log_every=2, val_every=0, deterministic=True, progress=False)
    full, _ = run_stage(tmp_path / "full", stage, data, 6, engine=eng)
    run_stage(tmp_path / "cut", stage, data, 6, engine=eng, stop_at=3)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["iteration"] == 3
    resumed, summary = run_stage(tmp_path / "cut", stage, data, 6, engine=eng, resume=True)
    assert summary["completed_iterations"] == 6
    a, b = _states(full), _states(resumed)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    rows = read_log(tmp_path / "cut" / "log.csv")
    assert [r["iteration"] for r in rows] == ["2", "3", "4", "6"]  # 3: the interrupted run's last row


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = tiny_data(2)
    eng = EngineConfig(device="cpu", log_every=2, val_every=2, nan_at=4, progress=False)
    with pytest.raises(ArcoError, match=r"NaN/inf between iterations 5 and 6.*last good checkpoint"):
        run_stage(tmp_path, "supervised", data, 10, engine=eng)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["predictor"]["state_dict"].values() if v.is_floating_point())


def test_stage2_initialises_from_stage1(tmp_path):
    data = tiny_data(2)
    pre, _ = run_stage(tmp_path / "pre", "pretrain", data, 2)
    fine, _ = run_stage(
        tmp_path / "fine",
        "finetune",
        data,
        1,
        init_from=tmp_path / "pre" / "checkpoints" / "last.pt",
        optim=OptimConfig(lr=0.0, momentum=0.0, weight_decay=0.0),
    )
    w_pre = pre.modules()["projector"].state_dict()["0.weight"]
    assert torch.equal(fine.modules()["projector"].state_dict()["0.weight"], w_pre)


def test_lr_schedules():
    poly = OptimConfig(schedule="poly")
    step = OptimConfig(schedule="step", step_size=2500)
    assert lr_factor(poly, 0, 100) == 1.0 and lr_factor(poly, 100, 100) == 0.0
    assert lr_factor(step, 2499, 10**5) == 1.0 and lr_factor(step, 2500, 10**5) == pytest.approx(0.1)


def test_bad_engine_values_are_named(tmp_path):
    data = tiny_data(2)
    with pytest.raises(ValueError, match="engine.precision"):
        run_stage(tmp_path, "supervised", data, 2, engine=EngineConfig(device="cpu", precision="fp8"))
    with pytest.raises(ValueError, match="iterations"):
        run_stage(tmp_path, "supervised", data, 0)


def test_summary_json(tmp_path):
    data = tiny_data(2)
    run_stage(tmp_path, "supervised", data, 3)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["stage"] == "supervised" and s["completed_iterations"] == 3
