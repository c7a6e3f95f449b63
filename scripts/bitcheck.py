"""Refactoring guard: train short fixed-seed runs and save, or compare bit for bit, what they computed.

    python scripts/bitcheck.py save DIR      # before a change: train and keep the final states in DIR/states.pt
    python scripts/bitcheck.py compare DIR   # after it: train again and compare with torch.equal

Runs ``arco train`` (one process per run, deterministic, 1 CPU thread) of ``supervised``, ``arco`` (both stages) and
``bcp`` (both stages) on a small 2D phantom for a few iterations with a validation in between, and keeps from every
stage's ``last.pt`` the weights of every module, the segmentation network, the optimiser state, the method's
generator and the global RNG states. Module names that a refactor renamed are mapped through :data:`RENAMED`
(``arco.checkpoint.upgrade_checkpoint`` reads old checkpoints the same way). Exit code 1 when anything differs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

RUNS = {"supervised": ("supervised",), "arco": ("pretrain", "finetune"), "bcp": ("pretrain", "selftrain")}
SETTINGS = (
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32, 32]",
    "data.labeled=2",
    "model.dim=8",
    "model.hidden_dim=8",
    "schedule.batch_labeled=2",
    "schedule.batch_unlabeled=2",
    "engine.device=cpu",
    "engine.threads=1",
    "engine.deterministic=true",
    "engine.log_every=2",
    "engine.val_every=3",
    "engine.progress=false",
    "engine.seed=5",
)
ITERATIONS = 6
#: Module names renamed since the baseline: ``{method: {old: new}}``.
RENAMED = {"arco-pretrain": {"predictor": "global_predictor"}, "arco-finetune": {"predictor": "global_predictor"}}


def _train(work: Path, method: str) -> Path:
    data, out = work / "phantom", work / "runs" / method
    if not data.is_dir():
        subprocess.run([sys.executable, "-m", "arco", "data", "phantom", "--out", str(data), "--subjects", "6",
                        "--size", "32"], check=True)  # fmt: skip
    sets = [a for kv in (*SETTINGS, f"data.root={data}") for a in ("--set", kv)]
    cmd = [sys.executable, "-m", "arco", "train", "--config", "phantom2d", "--method", method, *sets,
           "--iterations", str(ITERATIONS), "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def _flat(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(v, f"{prefix}.{k}", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flat(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = obj


def _states(out: Path, stages: tuple[str, ...]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for stage in stages:
        ckpt = torch.load(out / stage / "checkpoints" / "last.pt", weights_only=True)
        renamed = RENAMED.get(ckpt["method"], {})
        modules = {renamed.get(k, k): v for k, v in ckpt["modules"].items()}
        segmenter = ckpt.get("network", ckpt.get("predictor"))["state_dict"]
        for key, value in (("modules", modules), ("segmenter", segmenter), ("optimizers", ckpt["optimizers"]),
                           ("method_state", ckpt["method_state"]), ("rng", ckpt["rng"])):  # fmt: skip
            _flat(value, f"{stage}.{key}", flat)
        flat[f"{stage}.iteration"] = ckpt["iteration"]
    return flat


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("save", "compare"):
        print(__doc__)
        return 2
    mode, folder = argv[0], Path(argv[1]).resolve()
    work = folder / ("base" if mode == "save" else "new")
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    states = {m: _states(_train(work, m), stages) for m, stages in RUNS.items()}
    if mode == "save":
        torch.save(states, folder / "states.pt")
        print(f"saved {sum(len(s) for s in states.values())} entries of {', '.join(RUNS)} to {folder / 'states.pt'}")
        return 0
    base = torch.load(folder / "states.pt", weights_only=False)
    bad = 0
    for method, got in states.items():
        ref = base[method]
        diff = sorted(k for k in ref.keys() | got.keys() if k not in ref or k not in got or not _same(ref[k], got[k]))
        tensors = sum(isinstance(v, torch.Tensor) for v in ref.values())
        status = "identical" if not diff else f"{len(diff)} entries differ, e.g. {diff[:4]}"
        print(f"{method}: {tensors} tensors compared with torch.equal: {status}")
        bad += bool(diff)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
