"""The one training loop (STYLE.md §3): device, precision, optimiser and schedule, data stream, logging,
validation, checkpoints and resume. It knows the :class:`arco.methods.base.Method` protocol, never a concrete
method.

Resume is exact in deterministic CPU mode: the data stream is a pure function of ``(seed, iteration)``
(an infinite sampler whose order is a permutation seeded by ``(seed, epoch)``, and per-sample augmentation
seeded by ``(seed, iteration, slot)``), and the checkpoint holds every other random state (torch CPU/CUDA,
numpy, python, the method's generator), the optimiser, the memory banks/queues and the iteration.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arco._checks import ArcoError, CheckpointError, choice
from arco._io import atomic_write_text
from arco.checkpoint import load_checkpoint, save_checkpoint
from arco.methods.base import Batch, Method

__all__ = [
    "OptimConfig",
    "EngineConfig",
    "LOG_COLUMNS",
    "fit",
    "seed_everything",
    "resolve_device",
    "lr_factor",
    "BatchStream",
]

logger = logging.getLogger(__name__)

#: Columns of ``<run>/log.csv`` (empty cells where a value is not logged).
LOG_COLUMNS = (
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
)


@dataclass(frozen=True)
class OptimConfig:
    """SGD and its learning-rate schedule (paper + reference code, SPEC §5).

    Attributes:
        lr: initial learning rate (0.01).
        momentum: SGD momentum (0.9).
        weight_decay: L2 weight decay (1e-4).
        schedule: ``"poly"`` ((1 - t/T)^0.9, reference code) or ``"step"`` (x ``gamma`` every ``step_size``,
            paper).
        step_size: iterations between decays of the step schedule (2500).
        gamma: decay factor of the step schedule (0.1).
        power: exponent of the poly schedule (0.9).
        grad_clip: max gradient norm (0 = no clipping).
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"
    step_size: int = 2500
    gamma: float = 0.1
    power: float = 0.9
    grad_clip: float = 0.0


@dataclass(frozen=True)
class EngineConfig:
    """How the loop runs (not what it optimises).

    Attributes:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast, CUDA only; fp16 uses a GradScaler).
        seed: seeds weights, data order, augmentation and the method's sampler generator.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training (needed for exact resume
            on CUDA).
        log_every: iterations between log rows / progress updates / the non-finite-loss check (the only host
            syncs).
        val_every: iterations between validations on the val split and ``last.pt`` checkpoints (0 = only at
            the end).
        num_workers: data-loader worker processes (0 = load in the main process).
        threads: torch intra-op CPU threads (0 = torch's default).
        progress: show a tqdm progress bar.
        val_batch: slices (2D) or windows (3D) per forward pass in validation.
        nan_at: test hook: the loss becomes NaN at this iteration (-1 = never).
    """

    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 20
    val_every: int = 500
    num_workers: int = 0
    threads: int = 0
    progress: bool = True
    val_batch: int = 16
    nan_at: int = -1


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; raises ``ValueError`` for CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"engine.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"engine.device={name!r} but CUDA is not available here; use engine.device=cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators (weight initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - global state on purpose
    torch.manual_seed(seed)


def lr_factor(cfg: OptimConfig, iteration: int, total: int) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based) of ``total``."""
    if cfg.schedule == "poly":
        return (1.0 - min(iteration, total) / max(total, 1)) ** cfg.power
    return cfg.gamma ** (iteration // max(cfg.step_size, 1))


# ------------------------------------------------------------------------------------------------------------
# Deterministic, resumable data stream


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix-style; stable across runs and platforms)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h ^= (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class _SeededItems(torch.utils.data.Dataset):
    """Wraps a dataset: item ``(index, seed)`` fetches ``dataset[index]`` with the global RNGs seeded by
    ``seed``, so a
    sample's augmentation depends only on its seed (in the main process or any worker). Global states are
    restored."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = torch.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002 - global state on purpose
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 - global state on purpose
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])  # noqa: NPY002 - global state on purpose
            random.setstate(saved[2])


class _StreamSampler(torch.utils.data.Sampler):
    """Batches of ``(index, seed)`` for iterations ``start..total-1``; a pure function of (seed, stream,
    iteration).
    """

    def __init__(self, size: int, batch: int, seed: int, stream: int, start: int, total: int) -> None:
        self.size, self.batch, self.seed, self.stream, self.start, self.total = (
            size,
            batch,
            seed,
            stream,
            start,
            total,
        )
        self._perm: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, self.stream, epoch))
            self._perm = (epoch, torch.randperm(self.size, generator=g).tolist())
        return self._perm[1]

    def batch_at(self, iteration: int) -> list[tuple[int, int]]:
        out = []
        for j in range(self.batch):
            k = iteration * self.batch + j
            out.append((self._order(k // self.size)[k % self.size], _mix(self.seed, self.stream, iteration, j)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.total):
            yield self.batch_at(it)

    def __len__(self) -> int:
        return max(self.total - self.start, 0)


class BatchStream:
    """Labeled (+ unlabeled) batches for iterations ``start..total-1``, reproducible from ``(seed,
    iteration)``.
    """

    def __init__(
        self,
        labeled: Any,
        unlabeled: Any | None,
        batch_labeled: int,
        batch_unlabeled: int,
        seed: int,
        start: int,
        total: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if len(labeled) == 0:
            raise ArcoError("the labeled training set is empty; check data.labeled and the dataset folder")
        if unlabeled is not None and len(unlabeled) == 0:
            raise ArcoError(
                "this method needs unlabeled images but the unlabeled set is empty (is every training case "
                "labeled?); "
                "lower data.labeled or train the 'supervised' stage"
            )

        def loader(ds: Any, batch: int, stream: int) -> torch.utils.data.DataLoader:
            sampler = _StreamSampler(len(ds), batch, seed, stream, start, total)
            return torch.utils.data.DataLoader(
                _SeededItems(ds),
                batch_sampler=sampler,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=False,
                # Its own generator: creating the iterator must not draw from the global RNG (dropout), or a
                # resumed run would diverge from an uninterrupted one.
                generator=torch.Generator().manual_seed(_mix(seed, stream)),
            )

        self._labeled = loader(labeled, batch_labeled, 1)
        self._unlabeled = None if unlabeled is None else loader(unlabeled, batch_unlabeled, 2)

    def __iter__(self) -> Iterator[Batch]:
        unl = iter(self._unlabeled) if self._unlabeled is not None else None
        for lab in self._labeled:
            image_u = next(unl)["image"] if unl is not None else None
            yield Batch(lab["image"], lab["label"].long(), image_u)


# ------------------------------------------------------------------------------------------------------------
# Random states and checkpoints


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - global state on purpose
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _all_finite(method: Method) -> bool:
    for m in method.modules().values():
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return False
    return True


def _module_states(method: Method) -> dict[str, Any]:
    return {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in method.modules().items()}


def _load_modules(method: Method, states: dict[str, Any], strict: bool, source: Path) -> list[str]:
    loaded = []
    for name, m in method.modules().items():
        if name not in states:
            if strict:
                raise CheckpointError(f"{source} has no weights for module {name!r}; was it written by this stage?")
            continue
        try:
            m.load_state_dict(states[name], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{source}: weights of module {name!r} do not fit ({str(exc).splitlines()[0]}); "
                "the checkpoint was written with another model/config"
            ) from exc
        loaded.append(name)
    return loaded


# ------------------------------------------------------------------------------------------------------------
# Logging


class _Logger:
    """``log.csv`` (always) and TensorBoard (when ``torch.utils.tensorboard`` imports)."""

    def __init__(self, run_dir: Path, resume_iteration: int | None) -> None:
        self.path = run_dir / "log.csv"
        rows: list[dict[str, str]] = []
        if resume_iteration is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= resume_iteration]
        with open(self.path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self.tb = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            logger.debug("tensorboard is not installed; logging to log.csv only")

    def write(self, row: dict[str, Any], extra: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=LOG_COLUMNS).writerow({k: _fmt(row.get(k)) for k in LOG_COLUMNS})
        if self.tb is not None:
            it = int(row["iteration"])
            for k, v in {**row, **extra}.items():
                if k not in ("iteration", "stage") and v is not None:
                    self.tb.add_scalar(f"{row['stage']}/{k}", float(v), it)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ------------------------------------------------------------------------------------------------------------
# The loop


def _validate(
    method: Method,
    volumes: list[Any],
    data: Any,
    device: torch.device,
    autocast: Callable,
    batch: int,
    compat: str,
) -> float:
    from arco.evaluation.report import evaluate

    net = method.predictor()
    was_training = net.training
    net.eval()

    def predict(x: torch.Tensor) -> torch.Tensor:
        with autocast():
            return net(x.to(device)).logits.float()

    try:
        result = evaluate(
            predict,
            volumes,
            data.num_classes,
            data.spatial_dims,
            data.patch_size,
            compat=compat,
            overlays=0,
            batch_size=batch,
            device=str(device),
        )
    finally:
        net.train(was_training)
    return float(result.summary["mean"]["dice"])


def fit(
    method: Method,
    data: Any,
    *,
    stage: str,
    iterations: int,
    batch_labeled: int,
    batch_unlabeled: int,
    optim: OptimConfig,
    engine: EngineConfig,
    run_dir: str | os.PathLike,
    config: dict[str, Any],
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    eval_compat: str = "default",
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` (a :class:`arco.data.SegmentationData`) for ``iterations`` optimiser
    steps.

    Writes ``run_dir/{config.yaml, split.json, log.csv, checkpoints/last.pt, checkpoints/best.pt,
    summary.json,
    curves.png}``. ``best.pt`` is chosen by mean foreground Dice on the val split (never the test split).

    Args:
        method: a built method (weights initialised; call :func:`seed_everything` before building it).
        stage: name written to the log (``pretrain``, ``finetune``, ``supervised``).
        iterations, batch_labeled, batch_unlabeled: schedule (``batch_unlabeled`` unused when the method needs
            none).
        optim, engine: optimiser and loop settings.
        run_dir: output folder of this stage.
        config: resolved configuration, stored in ``config.yaml`` and in every checkpoint.
        resume: continue from ``run_dir/checkpoints/last.pt`` (identical weights to an uninterrupted run in
            deterministic CPU mode). Without a ``last.pt`` the run starts fresh.
        init_from: checkpoint whose modules initialise the method when not resuming (stage 2 from stage 1):
            every
            module with the same name is loaded.
        eval_compat: empty-mask policy of the validation metrics.
        stop_at: stop after this iteration as if interrupted (tests of resume).

    Returns:
        The summary dict also written to ``summary.json``.

    Raises:
        ArcoError: the loss became NaN/inf (the last good checkpoint is kept), or bad data/checkpoint.
    """
    import yaml

    if iterations < 1 or batch_labeled < 1 or (method.needs_unlabeled and batch_unlabeled < 1):
        raise ValueError(
            f"{stage}: iterations and batch sizes must be >= 1, got iterations={iterations}, "
            f"batch_labeled={batch_labeled}, batch_unlabeled={batch_unlabeled}"
        )
    choice("engine.precision", engine.precision, ("fp32", "bf16", "fp16"))
    choice("optim.schedule", optim.schedule, ("poly", "step"))
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    device = resolve_device(engine.device)
    if engine.threads > 0:
        torch.set_num_threads(engine.threads)
    precision = engine.precision
    if precision != "fp32" and device.type != "cuda":
        warnings.warn(f"engine.precision={precision} is only used on CUDA; training in fp32 on {device}", stacklevel=2)
        precision = "fp32"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    method.setup(device, engine.seed)
    params = method.param_groups()
    optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    data_meta = {
        "dataset": str(getattr(data, "name", "")),
        "spatial_dims": int(data.spatial_dims),
        "num_classes": int(data.num_classes),
        "class_names": list(getattr(data, "class_names", []) or []),
        "patch_size": [int(s) for s in data.patch_size],
        "normalization": str(getattr(data, "normalization", "")),
        "in_channels": int(getattr(data, "in_channels", 1)),
        "channel_names": list(getattr(data, "channel_names", ()) or ()),
        "channel_normalization": list(getattr(data, "channel_normalization", ()) or ()),
    }

    start, best_dice, best_iter = 0, -math.inf, -1
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, map_location="cpu")
        if state.get("stage") != stage:
            raise CheckpointError(f"{last_path} belongs to stage {state.get('stage')!r}, not {stage!r}")
        _load_modules(method, state["modules"], strict=True, source=last_path)
        method.setup(device, engine.seed)  # buffers loaded on CPU -> device
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start, best_dice, best_iter = (
            int(state["iteration"]),
            float(state["best_dice"]),
            int(state["best_iteration"]),
        )
        logger.info("%s: resuming from %s at iteration %d", stage, last_path, start)
    else:
        if resume:
            logger.info("%s: no %s to resume from; starting fresh", stage, last_path)
        if init_from is not None:
            src = Path(init_from)
            state = load_checkpoint(src, map_location="cpu")
            loaded = _load_modules(method, state.get("modules", {}), strict=False, source=src)
            if "student" not in loaded:
                raise CheckpointError(f"{src} holds no student weights to initialise {stage} from")
            method.setup(device, engine.seed)
            logger.info("%s: initialised %s from %s", stage, ", ".join(loaded), src)
        resume = False

    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    if getattr(data, "split", None) is not None:
        atomic_write_text(run_dir / "split.json", json.dumps(data.split, indent=2, default=str))

    prev_det = torch.are_deterministic_algorithms_enabled()
    if engine.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    stream = BatchStream(
        data.labeled,
        data.unlabeled if method.needs_unlabeled else None,
        batch_labeled,
        batch_unlabeled,
        engine.seed,
        start,
        iterations,
        engine.num_workers,
        pin_memory=device.type == "cuda",
    )
    log = _Logger(run_dir, start if resume else None)
    tqdm_bar = _progress(engine.progress, iterations, start, stage)
    t0 = time.perf_counter()

    def checkpoint_state(iteration: int) -> dict[str, Any]:
        pred_spec = method.predictor_spec
        return {
            "stage": stage,
            "iteration": iteration,
            "config": config,
            "data": data_meta,
            "predictor": {
                "arch": pred_spec["arch"],
                "kwargs": pred_spec["kwargs"],
                "state_dict": {k: v.detach().cpu() for k, v in method.predictor().state_dict().items()},
            },
            "modules": _module_states(method),
        }

    def save_last(iteration: int) -> None:
        if not _all_finite(method):
            raise ArcoError(
                f"{stage}: weights became non-finite before iteration {iteration}; not overwriting "
                f"{last_path}. "
                "Lower optim.lr, use engine.precision=fp32, or check the data."
            )
        state = checkpoint_state(iteration)
        state.update(
            method=method.state_dict(),
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict(),
            scheduler={"schedule": optim.schedule, "iteration": iteration, "total": iterations},
            rng=_rng_state(),
            data_stream={"seed": engine.seed, "iteration": iteration},
            best_dice=best_dice,
            best_iteration=best_iter,
        )
        save_checkpoint(state, last_path)

    sums: dict[str, torch.Tensor] = {}
    finite = torch.ones((), dtype=torch.bool, device=device)
    n_acc, it, last_logged = 0, start, start
    last_row: dict[str, Any] = {}
    method.train(True)
    try:
        for batch in stream:
            batch = batch.to(device)
            lr = optim.lr * lr_factor(optim, it, iterations)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast():
                out = method.training_step(batch, it)
            loss = out.loss.float()
            if it == engine.nan_at:
                loss = loss * float("nan")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if optim.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            method.after_optimizer_step(it)
            it += 1
            # Accumulate on the device: no host sync until the log interval.
            finite &= torch.isfinite(loss)
            for k, v in {"loss": loss.detach(), **out.logs}.items():
                sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
            n_acc += 1

            at_log = it % max(engine.log_every, 1) == 0 or it == iterations or it == stop_at
            at_val = (engine.val_every > 0 and it % engine.val_every == 0) or it == iterations
            if at_log or at_val:
                if not bool(finite):
                    raise ArcoError(
                        f"{stage}: the loss became NaN/inf between iterations {last_logged + 1} and {it}; "
                        f"training stopped. The last good checkpoint is kept at {last_path} "
                        f"({'present' if last_path.is_file() else 'none written yet'}). Try a lower "
                        "optim.lr, engine.precision=fp32, or optim.grad_clip > 0."
                    )
                means = {k: float(v) / n_acc for k, v in sums.items()}
                last_row = {"iteration": it, "stage": stage, "lr": lr, **means}
                sums, n_acc, last_logged = {}, 0, it
                if tqdm_bar is not None:
                    tqdm_bar.update(it - tqdm_bar.n)
                    tqdm_bar.set_postfix({k: f"{v:.3f}" for k, v in means.items() if k.startswith("loss")})
                val_dice = None
                if at_val and data.val:
                    val_dice = _validate(method, data.val, data, device, autocast, engine.val_batch, eval_compat)
                    method.train(True)
                    if val_dice > best_dice:
                        best_dice, best_iter = val_dice, it
                        state = checkpoint_state(it)
                        state["val_dice"] = val_dice
                        if not _all_finite(method):
                            raise ArcoError(f"{stage}: weights became non-finite at iteration {it}")
                        save_checkpoint(state, best_path)
                    logger.info(
                        "%s: iteration %d val Dice %.4f (best %.4f @ %d)",
                        stage,
                        it,
                        val_dice,
                        best_dice,
                        best_iter,
                    )
                last_row["val_dice"] = val_dice
                log.write(last_row, {k: v for k, v in means.items() if k not in LOG_COLUMNS})
                if at_val:
                    save_last(it)
            if stop_at is not None and it >= stop_at:
                save_last(it)
                break
    finally:
        if tqdm_bar is not None:
            tqdm_bar.close()
        log.close()
        if engine.deterministic:
            torch.use_deterministic_algorithms(prev_det)

    finished = it >= iterations
    if finished and not data.val:
        # No validation split: the final weights are the selected ones.
        save_checkpoint({**checkpoint_state(it), "val_dice": None}, best_path)
        best_iter = it
    summary = {
        "stage": stage,
        "iterations": iterations,
        "completed_iterations": it,
        "finished": finished,
        "best_val_dice": None if best_iter < 0 or not data.val else best_dice,
        "best_iteration": best_iter,
        "final_losses": {k: v for k, v in last_row.items() if k.startswith("loss")},
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "device": str(device),
        "precision": precision,
        "checkpoints": {"last": str(last_path), "best": str(best_path) if best_path.is_file() else None},
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    if finished:
        _plot_curves(run_dir)
    return summary


def _progress(enabled: bool, total: int, start: int, stage: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=stage, dynamic_ncols=True, leave=True)


def _plot_curves(run_dir: Path) -> None:
    try:
        from arco.evaluation.curves import plot_training_curves
    except ImportError:
        logger.debug("arco.evaluation.curves is not available; no curves.png")
        return
    plot_training_curves(run_dir / "log.csv", run_dir / "curves.png")
