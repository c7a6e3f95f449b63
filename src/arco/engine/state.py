"""Run state for checkpoints: random-generator states, the weights of a method's modules, and what ``last.pt`` and
``best.pt`` must hold to resume.

Kill-anywhere resume. Every file is written atomically (:mod:`arco._io`) and the stage folder is locked
(:mod:`arco._lock`). At a validation the order is: the log row (fsync'ed), then ``last.pt`` (which records the best
validation so far, ``best_dice`` / ``best_iteration``), then ``best.pt`` when this validation improved. ``last.pt`` is
the truth: a kill before it is written resumes from the previous one and the log rows after it are dropped; a kill
between ``last.pt`` and ``best.pt`` leaves ``best.pt`` one validation behind, and resuming from a ``last.pt`` whose own
iteration is the best rewrites ``best.pt`` from it (same weights). ``summary.json`` is written last: with
``finished: true`` it marks the stage done; a stage that reached its last iteration without it resumes from its final
``last.pt``, trains no step, and writes it.

Under DDP rank 0 writes ``last.pt`` for every rank: the weights, teachers, banks and optimiser state are identical
on all ranks; what differs (each rank's method generator and global RNG state) is stored per rank under
``ranks``, and each rank resumes from its own entry (:func:`own_random_state`).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arco._checks import CheckpointError
from arco.checkpoint import describe_checkpoint
from arco.methods.base import Method

__all__ = [
    "BEST_KEYS",
    "RESUME_KEYS",
    "all_finite",
    "best_from_last",
    "check_resumable",
    "load_modules",
    "module_states",
    "own_random_state",
    "rng_state",
    "set_rng_state",
]

logger = logging.getLogger(__name__)

#: What ``best.pt`` holds besides ``val_dice``: the same entries as ``last.pt`` at that iteration.
BEST_KEYS = ("stage", "method", "iteration", "config", "data", "predictor", "modules")
#: What ``last.pt`` adds to resume a stage bit-identically.
RESUME_KEYS = ("method_state", "optimizers", "scaler", "rng", "best_dice", "best_iteration")


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python global RNG states as checkpoint-safe tensors/containers."""
    np_state = np.random.get_state()  # noqa: NPY002 - global state on purpose
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - global state on purpose
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def own_random_state(state: dict[str, Any], rank: int, world: int, path: Path) -> dict[str, Any]:
    """``{"method_state", "rng"}`` this rank resumes from: its own entry of a ``last.pt`` written by as many ranks,
    else rank 0's (a run resumed on another number of ranks continues with other random draws, same data)."""
    ranks = state.get("ranks") or []
    if len(ranks) == world > 1:
        return ranks[rank]
    if world > 1 or ranks:
        logger.warning(
            "%s was written by %d rank(s) and is resumed on %d: weights, banks and data order continue exactly, the "
            "random draws of the method (sampling, augmentation) restart from rank 0's state",
            path, max(len(ranks), 1), world,
        )  # fmt: skip
    return {"method_state": state["method_state"], "rng": state["rng"]}


def all_finite(method: Method) -> bool:
    """True when every floating parameter and buffer of every module is finite (one sync per tensor: call
    at checkpoint time only)."""
    for m in method.components().values():
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return False
    return True


def module_states(method: Method) -> dict[str, Any]:
    return {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in method.components().items()}


def best_from_last(last: dict[str, Any]) -> dict[str, Any]:
    """``best.pt`` re-derived from a ``last.pt`` whose own validation was the best so far (same weights)."""
    return {**{k: last[k] for k in BEST_KEYS}, "val_dice": last["best_dice"]}


def check_resumable(state: dict[str, Any], path: Path, stage: str, method: str) -> None:
    """Raise ``CheckpointError`` unless ``state`` is a ``last.pt`` of this stage and method."""
    if state.get("stage") != stage or state.get("method") != method:
        raise CheckpointError(
            f"{path} belongs to stage {state.get('stage')!r} / method {state.get('method')!r}, not {stage!r} / "
            f"{method!r}: it is {describe_checkpoint(state)} and this folder holds another training. Use another "
            "--out, or drop --resume to start this stage over (its checkpoints are then overwritten)."
        )
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is {describe_checkpoint(state)} without the run state needed to resume ({', '.join(missing)}): "
            "it is a best.pt-style checkpoint, not a last.pt. Restore the stage's own last.pt, or drop --resume "
            "(and start from it with --init instead)."
        )


def load_modules(method: Method, states: dict[str, Any], names: tuple[str, ...] | None, source: Path,
                 fix: str = "the checkpoint was written with another model/config") -> list[str]:  # fmt: skip
    """Load module weights from ``states``; ``names=None`` loads every module and requires all (resume), otherwise
    the given names that ``states`` holds (initialisation from a previous stage). Returns the loaded names.
    ``fix`` ends the message when weights do not fit."""
    modules = method.components()
    wanted = list(modules) if names is None else [n for n in names if n in modules]
    loaded = []
    for name in wanted:
        if name not in states:
            if names is None:
                raise CheckpointError(f"{source} has no weights for module {name!r}; was it written by this stage?")
            continue
        try:
            modules[name].load_state_dict(states[name], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{source}: weights of module {name!r} do not fit ({str(exc).splitlines()[0]}); {fix}"
            ) from exc
        loaded.append(name)
    return loaded
