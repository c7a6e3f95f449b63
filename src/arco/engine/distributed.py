"""The engine's side of a multi-process (DDP) run: who writes, how the global batch is split, per-rank seeds, and
the few collectives outside the training step.

Rules (README "Scale"):

- **Launch.** ``torchrun --nproc_per_node=N -m arco train ...`` or ``arco train --nproc N``. The CLI initialises the
  process group (:func:`init_process_group`: NCCL on GPUs, gloo on CPU); the library uses it when one exists and
  is a single-process program otherwise.
- **Global batch.** ``schedule.batch_labeled`` / ``batch_unlabeled`` are the *global* batch sizes (the paper's);
  each rank trains on ``global / world_size`` (:func:`per_rank_batch`; an error when not divisible). Rank ``r``
  takes slice ``r`` of the global batch that a single process would draw at that iteration, so the data a run sees
  does not depend on the number of ranks.
- **Seeds.** Weights start identical (built from ``engine.seed``, then broadcast by DDP); the method's generator
  (samplers, CutMix, jitter) and the global RNG (dropout) are seeded with ``seed + rank``, so ranks draw different
  pixels.
- **Writes.** Only rank 0 takes the folder lock and writes logs, checkpoints, summaries and curves; the others wait
  at a barrier (:func:`main_lock`, :func:`barrier`). Every rank reads ``last.pt`` to resume; it holds each rank's
  random state (:func:`gather_objects`).
- **Validation** runs on rank 0 while the others wait (the val split is small, and rank 0 alone writes
  ``best.pt``).
- **Logs.** Each rank sums its logged scalars on the device; at a log row one all-gather averages them across ranks
  and checks that the weights, teachers and banks are still identical everywhere (:func:`reduce_logs`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from arco._checks import ArcoError, ConfigError
from arco._dist import is_distributed, rank, world_size
from arco._lock import run_lock

__all__ = [
    "barrier",
    "broadcast_object",
    "check_global_batch",
    "gather_objects",
    "init_process_group",
    "is_distributed",
    "is_main",
    "main_first",
    "main_lock",
    "per_rank_batch",
    "rank",
    "rank_device",
    "reduce_logs",
    "state_checksum",
    "world_size",
]

logger = logging.getLogger(__name__)

#: How long ranks wait for each other in a collective (rank 0 validates while the others wait).
TIMEOUT = datetime.timedelta(hours=2)


def init_process_group(device: str, local_rank: int) -> str:
    """Join the process group that ``torchrun`` describes in the environment (``env://``); NCCL when training on
    CUDA (each process on ``cuda:local_rank``), gloo otherwise. Returns the backend."""
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    return backend


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files."""
    return rank() == 0


def rank_device(device: torch.device) -> torch.device:
    """Under DDP a plain ``cuda`` device means this rank's GPU (the CLI sets it from ``LOCAL_RANK``)."""
    if is_distributed() and device.type == "cuda":
        if device.index is not None:
            raise ConfigError(
                f"engine.device={str(device)!r} names one GPU, but under DDP each process trains on its own GPU "
                "(its LOCAL_RANK): set engine.device=cuda or auto, and choose GPUs with CUDA_VISIBLE_DEVICES"
            )
        return torch.device("cuda", torch.cuda.current_device())
    return device


def per_rank_batch(stage: str, key: str, global_batch: int, world: int) -> int:
    """The per-rank batch of a global batch size; a ``ConfigError`` when ``world`` does not divide it."""
    if global_batch % world:
        ok = [w for w in range(1, global_batch + 1) if global_batch % w == 0]
        raise ConfigError(
            f"{stage}.{key}={global_batch} is the GLOBAL batch size and must be divisible by the number of ranks "
            f"({world}): each rank trains on {key} / ranks images. Set {stage}.{key} to a multiple of {world} "
            f"(e.g. {world * max(1, round(global_batch / world))}), or train on {ok} ranks."
        )
    return global_batch // world


def check_global_batch(stage: str, schedule: Any, needs_unlabeled: bool, sync_bn: bool) -> None:
    """Fail when the ranks do not divide the stage's global batch; warn when each rank gets a single image and
    BatchNorm is not synchronised (heads normalising one vector per image fail on it)."""
    world = world_size()
    per_rank = [per_rank_batch(stage, "batch_labeled", schedule.batch_labeled, world)]
    if needs_unlabeled:
        per_rank.append(per_rank_batch(stage, "batch_unlabeled", schedule.batch_unlabeled, world))
    if min(per_rank) == 1 and world > 1 and not sync_bn and is_main():
        logger.warning(
            "%s: each of the %d ranks trains on 1 image per batch; BatchNorm layers that see one vector per image "
            "(projection heads) cannot normalise it: set engine.sync_bn=true or a larger global batch",
            stage, world,
        )  # fmt: skip


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process). Picklable objects."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def main_first(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, then on the other ranks (e.g. building data that rank 0 may have to generate on disk
    first); when rank 0 fails, every rank raises an error with its message."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks hear of it
            error = exc
    message = broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if message is not None:
        raise ArcoError(f"rank 0 failed: {message}")
    return fn() if not is_main() else result


@contextlib.contextmanager
def main_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Rank 0 holds the folder's lock (:func:`arco._lock.run_lock`) for the block; the other ranks take none and
    fail with rank 0's error when it cannot lock (so every rank stops with the same message)."""
    if not is_distributed():
        with run_lock(folder, what):
            yield
        return
    with contextlib.ExitStack() as stack:
        error = None
        if is_main():
            try:
                stack.enter_context(run_lock(folder, what))
            except ArcoError as exc:
                error = exc
        message = broadcast_object(None if error is None else str(error))
        if error is not None:
            raise error
        if message is not None:
            raise ArcoError(message)
        yield


def state_checksum(modules: dict[str, torch.nn.Module]) -> torch.Tensor:
    """One float64 device scalar summarising every floating parameter and buffer (students, teachers, banks): equal
    on every rank while the replicas agree. Read only at log rows."""
    sums = [t.detach().double().sum() for m in modules.values() for t in (*m.parameters(), *m.buffers())
            if t.is_floating_point()]  # fmt: skip
    return torch.stack(sums).sum() if sums else torch.zeros((), dtype=torch.float64)


def reduce_logs(means: dict[str, torch.Tensor], checksum: torch.Tensor, stage: str) -> dict[str, float]:
    """Average the per-rank means of the logged scalars over ranks (one all-gather, the only collective of a log
    row) and check that every rank holds the same weights (``checksum``). Returns host floats."""
    keys = sorted(means)
    local = torch.stack([means[k].double() for k in keys] + [checksum.to(torch.float64)])
    if not is_distributed():
        return {k: float(v) for k, v in zip(keys, local[:-1].tolist())}
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    table = torch.stack(parts).cpu()
    sums = table[:, -1]
    if not bool((sums == sums[0]).all()):
        raise ArcoError(
            f"{stage}: the ranks' weights, teachers or banks differ (checksums {sums.tolist()}): a module was trained "
            "without gradient synchronisation or a bank was updated without gathering. This is a bug in the method "
            "or the engine under DDP; train on one process (no --nproc / torchrun) meanwhile."
        )
    return {k: float(v) for k, v in zip(keys, table[:, :-1].mean(0).tolist())}
