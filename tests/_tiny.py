"""Tiny stand-in data and one-call training helpers shared by the engine, method and pipeline tests."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from arco.data.volume import Volume
from arco.engine import EngineConfig, OptimConfig, ScheduleConfig, StageSpec, fit, seed_everything
from arco.engine.faults import Faults
from arco.methods import ModelConfig, build_method, get_method


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

#: Small but faithful parameters for the tiny data (fewer queries, small banks); other methods use defaults.
SMALL: dict[str, dict[str, Any]] = {
    "arco-pretrain": {"queue_size": 8},
    "arco-finetune": {
        "num_queries": 32,
        "num_negatives": 32,
        "bank_size": 64,
        "nn_bank": 8,
        "nn_k": 2,
        "confidence": 0.5,
    },
    "dan": {"ndf": 8},
    "sassnet": {"ndf": 8},
    "gcl-global": {"head_grid": 1, "hidden_dim": 32, "embed_dim": 16},
    "gcl-local": {"embed_dim": 16},
    "action-finetune": {"num_queries": 32, "num_negatives": 32},
}


def params_for(name: str, **over: Any) -> Any:
    """The config dataclass of method ``name`` with :data:`SMALL` settings and ``over`` applied."""
    return get_method(name).config_class(**{**SMALL.get(name, {}), **over})


def run_method(
    tmp_path,
    name: str,
    data: Any,
    iterations: int,
    model: ModelConfig = MODEL2D,
    engine: EngineConfig | None = None,
    optim: OptimConfig | None = None,
    params: Any = None,
    lr: float = 0.05,
    init_from: Any = None,
    stop_at: int | None = None,
    nan_at: int | None = None,
    batch: int = 2,
    **kw: Any,
):
    """Build method ``name`` (seed 0) and train it ``iterations`` steps on ``data`` into ``tmp_path`` (``batch``
    labeled + ``batch`` unlabeled images per step: the global batch under DDP). ``stop_at`` / ``nan_at`` inject
    those faults (:class:`arco.engine.faults.Faults`)."""
    seed_everything(0)
    method = build_method(name, params or params_for(name), 3, data.spatial_dims, model)
    engine = engine or EngineConfig(device="cpu", log_every=5, val_every=0, progress=False)
    schedule = ScheduleConfig(iterations=iterations, batch_labeled=batch, batch_unlabeled=batch, lr=lr)
    summary = fit(
        method,
        data,
        StageSpec(name, schedule, init_from=init_from),
        optim=optim or OptimConfig(),
        engine=engine,
        run_dir=tmp_path,
        config={"test": True},
        faults=Faults(nan_at=nan_at, stop_at=stop_at),
        **kw,
    )
    return method, summary


def build(name: str, spatial_dims: int = 2, total: int = 100, **over: Any):
    """Registered method ``name`` with :func:`params_for` settings (``over`` applied), 3 classes, small heads, seed 0,
    set up on the CPU for a stage of ``total`` steps, in training mode (the per-method tests' method)."""
    model = ModelConfig(arch="unet" if spatial_dims == 2 else "vnet", dim=8, hidden_dim=8, n_filters=4)
    torch.manual_seed(0)
    m = build_method(name, params_for(name, **over), 3, spatial_dims, model)
    m.setup(torch.device("cpu"), 0, total)
    m.set_training(True)
    return m


def component_states(method: Any) -> dict[str, torch.Tensor]:
    """Every tensor of every component, keyed ``component.key``."""
    return {f"{n}.{k}": v for n, m in method.components().items() for k, v in m.state_dict().items()}


def assert_resume_identical(
    tmp_path, name: str, iterations: int = 4, stop_at: int | None = None, dims: int = 2, log_every: int = 2, **kw: Any
) -> dict[str, Any]:
    """Trained ``iterations`` steps in one go, and stopped at ``stop_at`` (default half-way) then resumed, method
    ``name`` ends with the same tensors in every component, the same generator state and the same last log row
    (deterministic CPU). Returns the interrupted run's ``last.pt``."""
    from arco.checkpoint import load_checkpoint

    data, model = tiny_data(dims), (MODEL2D if dims == 2 else MODEL3D)
    eng = EngineConfig(device="cpu", log_every=log_every, val_every=0, deterministic=True, progress=False, threads=1)
    stop = iterations // 2 if stop_at is None else stop_at
    full, _ = run_method(tmp_path / "full", name, data, iterations, model=model, engine=eng, **kw)
    run_method(tmp_path / "cut", name, data, iterations, model=model, engine=eng, stop_at=stop, **kw)
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert cut["iteration"] == stop
    resumed, summary = run_method(tmp_path / "cut", name, data, iterations, model=model, engine=eng, resume=True, **kw)
    assert summary["completed_iterations"] == iterations
    a, b = component_states(full), component_states(resumed)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())
    assert read_log(tmp_path / "full" / "log.csv")[-1]["loss"] == read_log(tmp_path / "cut" / "log.csv")[-1]["loss"]
    return cut


def read_log(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


#: `arco train --set` values for a tiny 2D phantom and network (CLI tests).
TINY_2D = (
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32, 32]",
    "data.labeled=2",
    "model.dim=8",
    "model.hidden_dim=8",
)
#: ... and for a tiny 3D one (a 32^3 patch, a VNet of 4 base filters).
TINY_3D = (
    *(s for s in TINY_2D if not s.startswith("data.patch_size")),
    "data.patch_size=[32, 32, 32]",
    "model.n_filters=4",
)
#: `arco train` settings for a tiny, deterministic phantom2d run on one CPU thread (subprocess and CLI tests).
TRAIN_CLI_BASE = (
    *TINY_2D,
    "schedule.batch_labeled=2",
    "schedule.batch_unlabeled=2",
    "engine.device=cpu",
    "engine.threads=1",
    "engine.deterministic=true",
    "engine.log_every=1",
    "engine.val_every=2",
    "engine.progress=false",
)


def make_phantom(config: str, sets=()) -> None:
    """Generate the phantom that ``arco train --config CONFIG --set SETS`` reads, as ``arco data phantom`` would
    (``arco train`` never generates data: a missing data.root is an error). Only the ``data.*`` settings are read."""
    from arco.config import load_config
    from arco.data.phantom import PHANTOMS, ensure_phantom

    d = load_config(config, [s for s in sets if s.strip().startswith("data.")]).data
    if d.dataset in PHANTOMS:
        ensure_phantom(d.root, d.dataset, True, d.subjects, d.seed, d.image_size)


def train_argv(data, out, sets=(), extra=()) -> list[str]:
    """``arco train`` arguments (after the program name) for :data:`TRAIN_CLI_BASE` plus ``sets`` into ``out``;
    generates the phantom under ``data`` first (:func:`make_phantom`)."""
    sets = [*TRAIN_CLI_BASE, *sets, f"data.root={data}"]
    make_phantom("phantom2d", sets)
    return ["train", "--config", "phantom2d", *[a for kv in sets for a in ("--set", kv)], "--out", str(out), *extra]


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): obj}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def assert_same_run(ref: Path, got: Path, stage: str) -> int:
    """Every entry of last.pt and best.pt, the log and the summary agree; returns the number of tensors compared."""
    n = 0
    for name in ("last.pt", "best.pt"):
        a = _flat(torch.load(ref / stage / "checkpoints" / name, weights_only=True))
        b = _flat(torch.load(got / stage / "checkpoints" / name, weights_only=True))
        assert a.keys() == b.keys(), (stage, name, sorted(a.keys() ^ b.keys())[:5])
        diff = [k for k in a if not _same(a[k], b[k])]
        assert not diff, (stage, name, diff[:5])
        n += sum(isinstance(v, torch.Tensor) for v in a.values())
    assert read_log(ref / stage / "log.csv") == read_log(got / stage / "log.csv"), stage
    s_ref, s_got = (json.loads((r / stage / "summary.json").read_text()) for r in (ref, got))
    for s in (s_ref, s_got):
        s.pop("wall_seconds"), s.pop("checkpoints")
    assert s_ref == s_got, stage
    assert not list((got / stage).rglob("*.arco-tmp")), "the resumed run removes stray temporaries"
    return n
