"""Multi-process helpers of the DDP tests: spawn ranks on CPU (gloo), train through ``fit``, and report back.

Each rank writes what the test compares to ``OUT/rank<r>.pt``: the state of every module, the log, the summary, the
files it opened for writing inside the run folder (an audit hook sees every ``open``/``rename``/``mkdir``), and the
per-step teacher keys the pixel bank was given (to replay the bank in one process).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["WRITE_FLAGS", "audit_writes", "module_states", "per_image_dice", "run_ranks", "spawn"]

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def spawn(fn: Any, world: int, out: Path, *args: Any) -> None:
    """Run ``fn(rank, world, out, *args)`` in ``world`` fresh processes (a process group when ``world > 1``)."""
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_entry, (fn, world, str(out), args), nprocs=world, join=True)


def _entry(rank: int, fn: Any, world: int, out: str, args: tuple) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{out}/rdzv", rank=rank, world_size=world)
    try:
        fn(rank, world, Path(out), *args)
    finally:
        if world > 1:
            dist.destroy_process_group()


def audit_writes(folder: Path) -> list[str]:
    """Start recording every write inside ``folder`` by this process (open for writing, rename, mkdir, remove);
    returns the list that fills up."""
    root = str(folder.resolve())
    seen: list[str] = []

    def inside(p: Any) -> bool:
        try:
            return os.path.realpath(os.fsdecode(p)).startswith(root)
        except (TypeError, ValueError):
            return False

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and inside(args[0]):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            if (isinstance(flags, int) and flags & WRITE_FLAGS) or (isinstance(mode, str) and set(mode) & set("wax+")):
                seen.append(f"open {args[0]}")
        elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.unlink") and args and inside(args[0]):
            seen.append(f"{event} {args[0]}")

    sys.addaudithook(hook)
    return seen


def per_image_dice(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Soft Dice averaged over images (sums per image), the decomposable stand-in for the batch-level Dice."""
    probs = logits.float().softmax(1)
    onehot = torch.zeros_like(probs).scatter_(1, label.unsqueeze(1), 1.0)
    dims = tuple(range(2, probs.dim()))
    inter = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + onehot.sum(dims)
    return (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()


def module_states(method: Any) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().clone() for n, m in method.components().items() for k, v in m.state_dict().items()}


def run_ranks(rank: int, world: int, out: Path, plan: dict[str, Any]) -> None:
    """Train ``plan["method"]`` through ``fit`` on the tiny data and save what the tests compare.

    ``plan``: ``method``, ``params`` (overrides of the SMALL config), ``iterations``, ``batch`` (global),
    ``engine`` (EngineConfig overrides), ``run`` (run folder), ``stop_at``, ``resume``, ``decomposable`` (patch
    the batch Dice into the per-image Dice and build the UNet without dropout), ``tag`` (result file name).
    """
    import arco.losses.supervised as supervised
    import arco.models.unet as unet
    from _tiny import params_for, run_method, tiny_data
    from arco.engine import EngineConfig
    from arco.losses.banks import ClassBanks

    run_dir = Path(plan["run"])
    writes = audit_writes(run_dir)
    if plan.get("decomposable"):
        supervised.dice_loss = per_image_dice
        unet.UNET_DROPOUT = (0.0,) * len(unet.UNET_DROPOUT)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # each step's keys this rank pushes into the banks
    original = ClassBanks.push

    def recording(self: ClassBanks, keys: torch.Tensor, valid: torch.Tensor) -> None:
        pending.append((keys.clone(), valid.clone()))
        original(self, keys, valid)

    ClassBanks.push = recording
    engine = EngineConfig(**{"device": "cpu", "log_every": 1, "val_every": 0, "progress": False, **plan["engine"]})
    name = plan["method"]
    method, summary = run_method(
        run_dir,
        name,
        tiny_data(2),
        plan["iterations"],
        engine=engine,
        params=params_for(name, **plan.get("params", {})),
        batch=plan["batch"],
        stop_at=plan.get("stop_at"),
        resume=plan.get("resume", False),
    )
    result = {"states": module_states(method), "writes": list(writes), "summary": summary, "pending": pending}
    torch.save(result, out / f"{plan.get('tag', 'result')}-rank{rank}.pt")
