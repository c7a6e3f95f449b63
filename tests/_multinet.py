"""Helpers of the multi-decoder / multi-network method tests (CCT, URPC, MC-Net, SS-Net, DCT, CPS): an independent
Dice, output capture, gradient comparison, the CLI smoke run and the bit-identical resume check."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

from _tiny import MODEL3D, make_phantom, run_method, tiny_data
from arco.checkpoint import load_checkpoint, load_predictor
from arco.cli import main
from arco.engine import EngineConfig

SMOKE_2D = [
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32, 32]",
    "data.labeled=2",
    "model.dim=8",
    "model.hidden_dim=8",
]
SMOKE_3D = [
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32, 32, 32]",
    "data.labeled=2",
    "model.n_filters=4",
    "model.dim=8",
    "model.hidden_dim=8",
]
COMMON = [
    "schedule.batch_labeled=2",
    "schedule.batch_unlabeled=2",
    "engine.device=cpu",
    "engine.log_every=1",
    "engine.val_every=3",
    "engine.progress=false",
]


def dice_ref(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """SSL4MIS's DiceLoss written as its per-class loop: mean_c 1 - (2 I + 1e-5) / (sum p^2 + sum y^2 + 1e-5)."""
    p = logits.float().softmax(1)
    terms = []
    for c in range(logits.shape[1]):
        y = (label == c).float()
        inter = (p[:, c] * y).sum()
        terms.append(1 - (2 * inter + 1e-5) / ((p[:, c] ** 2).sum() + (y**2).sum() + 1e-5))
    return torch.stack(terms).mean()


def sup_ref(logits: torch.Tensor, label: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    return weight * (F.cross_entropy(logits.float(), label) + dice_ref(logits, label))


def sigmoid_ramp(step: int, total: int, fraction: float) -> float:
    t = min(max(step / (fraction * total), 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class Capture:
    """Record every output (in the graph) of ``module`` (or of one of its methods) during a training step."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.outputs: list = []
        self.inputs: list = []
        module.register_forward_hook(self._hook)

    def _hook(self, _m, args, out) -> None:
        self.inputs.append(args[0] if args else None)
        self.outputs.append(out)


def assert_same_gradients(a: torch.Tensor, b: torch.Tensor, params: list[torch.Tensor], atol: float = 1e-6) -> None:
    """``a`` and ``b`` have equal gradients w.r.t. every parameter: same value *and* same stop-gradients."""
    ga = torch.autograd.grad(a, params, retain_graph=True, allow_unused=True)
    gb = torch.autograd.grad(b, params, retain_graph=True, allow_unused=True)
    for i, (x, y) in enumerate(zip(ga, gb)):
        x = torch.zeros_like(params[i]) if x is None else x
        y = torch.zeros_like(params[i]) if y is None else y
        assert torch.allclose(x, y, atol=atol, rtol=1e-4), f"parameter {i} {tuple(params[i].shape)}: gradients differ"


def cli_train_and_evaluate(tmp_path, name: str, dims: int = 2, sets: tuple[str, ...] = ()) -> dict:
    """``arco train --method name`` 3 iterations on the phantom, then ``arco evaluate`` of the stage folder.
    Returns the final checkpoint's state."""
    config = "phantom2d" if dims == 2 else "phantom3d"
    kv = [*(SMOKE_2D if dims == 2 else SMOKE_3D), *COMMON, f"data.root={tmp_path / 'data'}", *sets]
    run = tmp_path / "run"
    args = ["train", "--config", config, "--method", name, "--iterations", "3", "--out", str(run)]
    make_phantom(config, kv)
    assert main([*args, *[a for x in kv for a in ("--set", x)]]) == 0
    stage = run / name
    state = load_checkpoint(stage / "checkpoints" / "last.pt")
    assert state["method"] == name and state["iteration"] == 3
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(stage), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["mean"]["dice"] <= 1.0
    model, meta = load_predictor(stage)
    size = (1, 1, *([32] * dims))
    assert model(torch.zeros(size)).logits.shape == (1, meta["data"]["num_classes"], *size[2:])
    return state


def _states(method) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, m in method.components().items() for k, v in m.state_dict().items()}


def assert_resume_bit_identical(tmp_path, name: str, dims: int = 2, iterations: int = 4) -> None:
    """Training ``iterations`` steps in one go equals stopping half-way and resuming, for every module tensor."""
    data = tiny_data(dims)
    kw = {"model": MODEL3D} if dims == 3 else {}
    eng = EngineConfig(device="cpu", log_every=2, val_every=0, deterministic=True, progress=False)
    full, _ = run_method(tmp_path / "full", name, data, iterations, engine=eng, **kw)
    run_method(tmp_path / "cut", name, data, iterations, engine=eng, stop_at=iterations // 2, **kw)
    resumed, summary = run_method(tmp_path / "cut", name, data, iterations, engine=eng, resume=True, **kw)
    assert summary["completed_iterations"] == iterations
    a, b = _states(full), _states(resumed)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
