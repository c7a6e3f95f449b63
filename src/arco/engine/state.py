"""Run state for checkpoints: random-generator states and the weights of a method's modules."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arco._checks import CheckpointError
from arco.methods.base import Method

__all__ = ["rng_state", "set_rng_state", "module_states", "load_modules", "all_finite"]


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


def all_finite(method: Method) -> bool:
    """True when every floating parameter and buffer of every module is finite (one sync per tensor: call
    at checkpoint time only)."""
    for m in method.modules().values():
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return False
    return True


def module_states(method: Method) -> dict[str, Any]:
    return {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in method.modules().items()}


def load_modules(method: Method, states: dict[str, Any], names: tuple[str, ...] | None, source: Path) -> list[str]:
    """Load module weights from ``states``; ``names=None`` loads every module and requires all (resume), otherwise
    the given names that ``states`` holds (initialisation from a previous stage). Returns the loaded names."""
    modules = method.modules()
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
                f"{source}: weights of module {name!r} do not fit ({str(exc).splitlines()[0]}); "
                "the checkpoint was written with another model/config"
            ) from exc
        loaded.append(name)
    return loaded
