"""Shared checks of the baseline-method tests: a stub backbone with hand-computable outputs, independent reference
losses, the CLI smoke run (train a few iterations, then evaluate) and the bit-identical resume check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _tiny import make_phantom, read_log, run_method, tiny_data
from arco.checkpoint import load_checkpoint
from arco.cli import main
from arco.engine import EngineConfig
from arco.methods import Batch, ModelConfig, build_method
from arco.models import SegOutput

NUM_CLASSES = 3


class Stub(nn.Module):
    """A fixed 'network' whose logits are known in closed form: ``logits_c = w_c·x + b_c`` per pixel (``x`` the
    image's first channel). ``encode`` returns ``[x]``, ``decode`` applies the map; every input is recorded."""

    def __init__(self, w: list[float], b: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(b))
        self.inputs: list[torch.Tensor] = []

    def closed_form(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return self.w.detach().view(shape) * x[:, :1] + self.b.detach().view(shape)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.inputs.append(x.detach().clone())
        return [x]

    def decode(self, maps: list[torch.Tensor]) -> SegOutput:
        x = maps[-1]
        shape = (1, -1, *([1] * (x.dim() - 2)))
        logits = self.w.view(shape) * x[:, :1] + self.b.view(shape)
        return SegOutput(logits, [x], x)

    def forward(self, x: torch.Tensor) -> SegOutput:
        return self.decode(self.encode(x))


STUDENT = ([1.5, -1.0, 0.5], [0.0, 0.3, -0.2])
TEACHER = ([-0.8, 2.0, 1.0], [0.1, -0.4, 0.2])


def build(name: str, spatial_dims: int = 2, total_steps: int = 100, **params):
    """The registered method with its default config (``params`` overriding), set up on the CPU."""
    from arco.methods import get_method

    model = ModelConfig(arch="unet" if spatial_dims == 2 else "vnet", dim=8, hidden_dim=8, n_filters=4)
    torch.manual_seed(0)
    m = build_method(name, get_method(name).config_class(**params), NUM_CLASSES, spatial_dims, model)
    m.setup(torch.device("cpu"), 0, total_steps)
    m.set_training(True)
    return m


def install(method, name: str, module: nn.Module) -> nn.Module:
    """Replace the method's component ``name`` (what ``method.<name>`` returns too) by ``module``."""
    method._components[name] = module
    method._calls[name] = module
    if name in dict(method.ema_pairs):
        module.requires_grad_(False).eval()
    return module


def stubbed(name: str, spatial_dims: int = 2, teacher: bool = True, **params):
    m = build(name, spatial_dims, **params)
    s = install(m, "student", Stub(*STUDENT))
    t = install(m, "teacher", Stub(*TEACHER)) if teacher else None
    return m, s, t


def batch(spatial_dims: int = 2, bl: int = 2, bu: int = 2, seed: int = 1, size: int = 8) -> Batch:
    g = torch.Generator().manual_seed(seed)
    s = (size,) * spatial_dims
    return Batch(
        torch.randn(bl, 1, *s, generator=g),
        torch.randint(0, NUM_CLASSES, (bl, *s), generator=g),
        torch.randn(bu, 1, *s, generator=g),
    )


# ----------------------------------------------------------------------------------- reference formulas
def ref_dice(logits: torch.Tensor, label: torch.Tensor, keep: torch.Tensor | None = None, eps: float = 1e-5):
    """``mean_c 1 - (2 Σ p_c y_c + eps) / (Σ p_c² + Σ y_c + eps)`` over the (kept) pixels, a loop over classes."""
    p = logits.double().softmax(1)
    keep = torch.ones_like(label, dtype=torch.bool) if keep is None else keep
    losses = []
    for c in range(logits.shape[1]):
        pc, yc = p[:, c][keep], (label == c)[keep].double()
        losses.append(1 - (2 * (pc * yc).sum() + eps) / ((pc * pc).sum() + yc.sum() + eps))
    return torch.stack(losses).mean()


def ref_sup(logits: torch.Tensor, label: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    return weight * (F.cross_entropy(logits.double(), label) + ref_dice(logits, label))


def sigmoid_ramp(step: int, length: float) -> float:
    return math.exp(-5 * (1 - min(step / length, 1.0)) ** 2)


# ----------------------------------------------------------------------------------------- CLI and resume
TINY_2D = [
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32, 32]",
    "data.labeled=2",
    "model.dim=8",
    "model.hidden_dim=8",
]
TINY_3D = [
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32, 32, 32]",
    "data.labeled=2",
    "model.n_filters=4",
    "model.dim=8",
    "model.hidden_dim=8",
]
ENGINE = [
    "schedule.batch_labeled=2",
    "schedule.batch_unlabeled=2",
    "engine.device=cpu",
    "engine.threads=1",
    "engine.log_every=1",
    "engine.val_every=3",
    "engine.progress=false",
]


def cli_smoke(
    tmp_path: Path,
    method: str,
    spatial_dims: int,
    stage: str | None = None,
    iterations: int = 3,
    extra: list[str] | tuple[str, ...] = (),
):
    """``arco train --method METHOD`` for a few iterations on the tiny phantom (``extra`` more ``--set`` values),
    then ``arco evaluate`` on its last stage; returns (the stage's log rows, the evaluation summary)."""
    config, tiny = ("phantom2d", TINY_2D) if spatial_dims == 2 else ("phantom3d", TINY_3D)
    sets = [*tiny, *ENGINE, f"data.root={tmp_path / 'data'}", *extra]
    run = tmp_path / "run"
    args = ["train", "--config", config, "--method", method, "--iterations", str(iterations), "--out", str(run)]
    make_phantom(config, sets)
    assert main([*args, *[a for kv in sets for a in ("--set", kv)]]) == 0
    stage_dir = run / (stage or method)
    state = load_checkpoint(stage_dir / "checkpoints" / "last.pt")
    assert state["iteration"] == iterations and state["data"]["spatial_dims"] == spatial_dims
    assert main(["evaluate", "--checkpoint", str(stage_dir), "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    return read_log(stage_dir / "log.csv"), summary


def _states(method) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, m in method.components().items() for k, v in m.state_dict().items()}


def assert_resume_identical(tmp_path: Path, name: str, iterations: int = 4, stop_at: int = 2) -> None:
    """Interrupted at ``stop_at`` and resumed, a run ends with the same weights, buffers and generator state as an
    uninterrupted one (deterministic CPU mode)."""
    data = tiny_data(2)
    eng = EngineConfig(device="cpu", log_every=1, val_every=0, deterministic=True, progress=False, threads=1)
    full, _ = run_method(tmp_path / "full", name, data, iterations, engine=eng)
    run_method(tmp_path / "cut", name, data, iterations, engine=eng, stop_at=stop_at)
    resumed, summary = run_method(tmp_path / "cut", name, data, iterations, engine=eng, resume=True)
    assert summary["completed_iterations"] == iterations
    a, b = _states(full), _states(resumed)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())
    full_rows, cut_rows = read_log(tmp_path / "full" / "log.csv"), read_log(tmp_path / "cut" / "log.csv")
    assert full_rows[-1]["loss"] == cut_rows[-1]["loss"]
