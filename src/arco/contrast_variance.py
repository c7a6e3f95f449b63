"""The variance claim where it matters: the spread of L_contrast and of its gradient over sampler draws, measured on
a trained ARCO stage-2 run (paper Thm 3.2: SG's estimate never has a higher variance than NS's).

``measure`` takes the run's own data, weights and banks (from ``last.pt``), builds real training batches (the
teacher's pseudo-labels and the strong view exactly as the stage-2 step builds them, computed once per batch), and
then, at those fixed weights, features, banks and batch, evaluates L_contrast again and again with different
generator seeds, once per sampler. For each sampler it reports the variance of the loss value and the total variance
(trace of the covariance) of its gradient with respect to the student's representation head (``wrt="rep-head"``:
the fused map and the linear pair, and a framework's predictor, features detached) or to every student parameter
(``wrt="student"``), averaged over batches, with their ratios to NS.

- ``finetune.contrast: reference``: the sampler draws the anchors and the negatives from the banks (both vary with
  the seed, as in training); the banks are not updated between draws. ``sg-ref``/``sag-ref`` do not apply.
- ``finetune.framework`` other than ``arco`` (SimCLR, MoCo v2, BYOL, ISD, VICReg: :mod:`arco.losses.frameworks`): the
  sampler draws the pixels (and, for MoCo and ISD, the queue keys); queues are not updated between draws.
  ``sg-ref``/``sag-ref`` do not apply.
- ``finetune.contrast: batch``: only the queries are redrawn; the negative keys are drawn with one fixed generator
  from the draws put in a canonical order, so the sampler's choice of pixels is the only source of randomness.
  ``sg-ref``/``sag-ref`` (the reference code's list-position samplers) are plugged in through
  :func:`arco.sampling.sample`, one class at a time (with replacement, exactly ``num_queries`` per present class).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from arco._checks import CheckpointError
from arco._io import atomic_path, atomic_write_text

__all__ = ["LoadedRun", "load_run", "measure", "format_table", "write_outputs", "SAMPLERS", "COLUMNS"]

logger = logging.getLogger(__name__)

SAMPLERS = ("ns", "sg", "sag", "sg-ref", "sag-ref")
COLUMNS = (
    "sampler", "draws", "batches", "loss_mean", "loss_var", "loss_var_ratio", "grad_var", "grad_var_ratio",
    "grad_norm", "grad_rel_sd",
)  # fmt: skip
_NEGATIVE_SEED = 12345


@dataclass
class LoadedRun:
    """A stage-2 run rebuilt from its checkpoint: config, stage, method (weights loaded) and data."""

    cfg: Any
    stage: Any
    method: Any
    data: Any
    checkpoint: Path
    iteration: int = 0


def load_run(checkpoint: str | os.PathLike, device: str = "cpu", data_root: str | None = None) -> LoadedRun:
    """Rebuild the method and data of a trained stage with a pixel contrastive loss (ARCO's ``arco-finetune``).

    Raises:
        CheckpointError: not an arco checkpoint, or its method has no pixel contrastive loss.
    """
    import dataclasses

    from arco._device import resolve_device
    from arco.checkpoint import load_checkpoint, resolve_checkpoint
    from arco.config import build_config
    from arco.data import build_data
    from arco.engine.state import load_modules
    from arco.methods.arco import ArcoFinetuneMethod
    from arco.pipeline import build_stage_method

    path = resolve_checkpoint(checkpoint)
    if path.name == "best.pt" and (path.parent / "last.pt").is_file():
        path = path.parent / "last.pt"  # the banks and the step of the end of training
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or "modules" not in state or "stage" not in state:
        raise CheckpointError(f"{path} holds no run config or module weights; give a run folder written by arco train")
    cfg = build_config(state["config"])
    if data_root:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_root)))
    stage = cfg.stage(state["stage"])
    data = build_data(cfg.data)
    method = build_stage_method(cfg, stage, data)
    if not isinstance(method, ArcoFinetuneMethod):
        raise CheckpointError(
            f"{path} is a {stage.method!r} stage, which has no pixel contrastive loss; give an ARCO stage-2 run "
            "(the finetune stage of arco, arco-ns or arco-sag)"
        )
    method.setup(resolve_device(device), cfg.engine.seed, stage.schedule.iterations)
    load_modules(method, state["modules"], None, path)
    method.set_training(True)
    return LoadedRun(cfg, stage, method, data, path, int(state.get("iteration", stage.schedule.iterations)))


def _batches(run: LoadedRun, count: int, seed: int) -> list[Any]:
    from arco.engine import BatchStream

    sched = run.stage.schedule
    stream = BatchStream(run.data.labeled, run.data.unlabeled, sched.batch_labeled, sched.batch_unlabeled, seed, 0,
                         count, 0)  # fmt: skip
    return [b.to(run.method.device) for b in stream]


def _inputs(run: LoadedRun, batch: Any, seed: int, with_grad: bool) -> dict[str, Any]:
    """What one stage-2 step feeds L_contrast (as ``ArcoFinetuneMethod.training_step`` builds it), computed once."""
    m, cfg = run.method, run.method.cfg
    g = torch.Generator(device=m.device).manual_seed(seed)
    views = m.strong_views(batch, g)  # the method's own construction of the stage-2 inputs
    with torch.set_grad_enabled(with_grad):
        out = m.student_forward(batch.image_l, views.image)
    if not with_grad:
        out = out._replace(
            logits=out.logits.detach(), features=[f.detach() for f in out.features], bottleneck=out.bottleneck.detach()
        )
    label = torch.cat([batch.label_l, views.pseudo])
    valid = torch.cat([torch.ones_like(batch.label_l, dtype=torch.bool), views.confidence >= cfg.confidence])
    return {"label": label, "valid": valid, "out": out, "views": views, "label_l": batch.label_l}


def _draw(label: torch.Tensor, valid: torch.Tensor, c: int, num: int, strategy: str, grid: int, gen) -> tuple:
    """``(index (C, num), ok (C, num))`` for any strategy, the reference ones class by class."""
    from arco import sampling

    if strategy not in sampling.REF_STRATEGIES:
        return sampling.sample_per_class(label, c, num, strategy, grid=grid, valid=valid, generator=gen)
    index = torch.zeros(c, num, dtype=torch.long, device=label.device)
    ok = torch.zeros(c, num, dtype=torch.bool, device=label.device)
    for k in range(c):  # a diagnostic, not a training step: one reference draw per class
        mask = (label == k) & valid
        if bool(mask.any()):
            idx = sampling.sample(mask, num, strategy, grid=grid, generator=gen)
            index[k, : idx.numel()], ok[k, : idx.numel()] = idx, True
    return index, ok


def _batch_loss(run: LoadedRun, inp: dict[str, Any], strategy: str, gen: torch.Generator) -> torch.Tensor:
    """The ``batch`` loss with the sampler's queries drawn by ``gen`` and the negatives by one fixed generator."""
    from arco.losses.contrastive import pixel_contrastive_loss
    from arco.methods._arco_common import levels

    m, cfg = run.method, run.method.cfg
    c, q, k = m.num_classes, cfg.num_queries, m.contrast.bank_size
    neg = torch.Generator(device=m.device).manual_seed(_NEGATIVE_SEED)
    index, ok = _draw(inp["label"], inp["valid"], c, q, strategy, cfg.grid, gen)
    # Canonical order (the loss does not depend on it, but the fixed negative draws index the pool by position):
    # the same drawn set then always meets the same negatives.
    index = torch.where(ok, index, index.new_full((), inp["label"].numel())).sort(dim=1).values
    flat = torch.where(ok, index, 0).reshape(-1)
    query = F.normalize(m.rep_pair(m.rep_head.forward_at(levels(inp["out"]), flat)).float(), dim=-1)
    with torch.no_grad():
        key = F.normalize(m.teacher_rep_head.forward_at(inp["views"].teacher_levels, flat).float(), dim=-1)
    bank, bank_ok = m.contrast.bank[:, :k], m.contrast.bank_valid[:, :k]
    return pixel_contrastive_loss(query.view(c, q, -1), key.view(c, q, -1), ok, bank, bank_ok, cfg.num_negatives,
                                  cfg.tau, neg)  # fmt: skip


def _one_sampler(run: LoadedRun, inp: dict[str, Any], strategy: str, draws: int, params: list, seed: int) -> dict:
    """Loss values and gradient moments over ``draws`` sampler draws at fixed weights and batch."""
    m = run.method
    losses, g_sum, g_sq = [], None, None
    for r in range(draws):
        gen = torch.Generator(device=m.device).manual_seed(seed * 1_000_003 + r)
        if m.cfg.contrast == "reference" or m.cfg.framework != "arco":
            loss = m.contrast_loss(inp["views"], inp["out"], inp["label_l"], run.iteration, gen, False, strategy)
        else:
            loss = _batch_loss(run, inp, strategy, gen)
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        g = torch.cat([(gr if gr is not None else torch.zeros_like(p)).flatten() for gr, p in zip(grads, params)])
        g = g.double()
        g_sum = g if g_sum is None else g_sum + g
        g_sq = g * g if g_sq is None else g_sq + g * g
        losses.append(float(loss.detach()))
    mean = g_sum / draws
    grad_var = float(((g_sq - draws * mean * mean) / (draws - 1)).clamp_min(0).sum())
    t = torch.tensor(losses, dtype=torch.float64)
    return {
        "loss_mean": float(t.mean()),
        "loss_var": float(t.var()),
        "grad_var": grad_var,
        "grad_norm": float(mean.norm()),
    }


def measure(
    run: LoadedRun,
    samplers: Sequence[str] = SAMPLERS,
    draws: int = 64,
    batches: int = 4,
    seed: int = 0,
    wrt: str = "rep-head",
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Variance of L_contrast and of its gradient over ``draws`` sampler draws per batch, averaged over ``batches``
    real batches; one row per sampler (``COLUMNS``), ratios relative to the first sampler row named ``ns``."""
    from arco._checks import choice
    from arco.sampling import REF_STRATEGIES, STRATEGIES

    for s in samplers:
        choice("sampler", s, (*STRATEGIES, *REF_STRATEGIES), where="measure()")
    choice("wrt", wrt, ("rep-head", "student"), where="measure()")
    if draws < 2 or batches < 1:
        raise ValueError(f"measure(): draws must be >= 2 and batches >= 1, got {draws}, {batches}")
    m = run.method
    if (m.cfg.contrast == "reference" or m.cfg.framework != "arco") and set(samplers) & set(REF_STRATEGIES):
        what = "finetune.contrast=reference" if m.cfg.framework == "arco" else f"finetune.framework={m.cfg.framework}"
        raise ValueError(
            f"measure(): {sorted(set(samplers) & set(REF_STRATEGIES))} are pixel-list samplers of the batch loss; "
            f"this run's loss ({what}) draws through sample_per_class and sample_bank: use ns, sg and sag"
        )
    extra = m.framework_head().parameters() if m.framework_head() is not None else ()  # BYOL's / ISD's predictor
    heads = [*m.rep_head.parameters(), *m.rep_pair.parameters(), *extra]
    params = [p for p in (heads if wrt == "rep-head" else m.student.parameters()) if p.requires_grad]
    acc: dict[str, dict[str, float]] = {s: {} for s in samplers}
    devices = [m.device] if m.device.type == "cuda" else []
    # Dropout in the forward passes: seeded, without touching the caller's random state.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for b, batch in enumerate(_batches(run, batches, seed)):
            inp = _inputs(run, batch, seed * 7919 + b, with_grad=wrt == "student")
            for s in samplers:
                res = _one_sampler(run, inp, s, draws, params, seed * 10_007 + b)
                for k, v in res.items():
                    acc[s][k] = acc[s].get(k, 0.0) + v / batches
                if progress is not None:
                    progress(draws)
    rows = []
    ref = acc.get("ns")
    for s in samplers:
        a = acc[s]
        rows.append(
            {
                "sampler": s, "draws": draws, "batches": batches, **a,
                "loss_var_ratio": a["loss_var"] / ref["loss_var"] if ref and ref["loss_var"] > 0 else math.nan,
                "grad_var_ratio": a["grad_var"] / ref["grad_var"] if ref and ref["grad_var"] > 0 else math.nan,
                "grad_rel_sd": math.sqrt(a["grad_var"]) / a["grad_norm"] if a["grad_norm"] > 0 else math.nan,
            }
        )  # fmt: skip
    return [{k: r[k] for k in COLUMNS} for r in rows]


def format_table(rows: Sequence[dict[str, Any]], wrt: str = "rep-head") -> str:
    """Plain-text table: variance of the loss and of its gradient, and their ratio to NS."""
    head = f"{'sampler':<8} {'mean L':>9} {'Var L':>10} {'/NS':>6} {'Var grad':>10} {'/NS':>6}"
    lines = [f"{head} {'|E grad|':>9} {'sd/|E g|':>8}"]
    for r in rows:
        lines.append(
            f"{r['sampler']:<8} {r['loss_mean']:9.4f} {r['loss_var']:10.3e} {r['loss_var_ratio']:6.3f} "
            f"{r['grad_var']:10.3e} {r['grad_var_ratio']:6.3f} {r['grad_norm']:9.3e} {r['grad_rel_sd']:8.3f}"
        )
    r0 = rows[0]
    lines.append(
        f"{r0['draws']} sampler draws on each of {r0['batches']} training batches at fixed weights; Var grad = trace "
        f"of the covariance of dL_contrast/d({wrt}); negatives drawn with one fixed generator (only the sampler "
        "varies)."
    )
    return "\n".join(lines)


def write_outputs(rows: Sequence[dict[str, Any]], out: str | os.PathLike, title: str = "") -> tuple[Path, Path]:
    """``contrast_variance.csv`` and ``contrast_variance.png`` (variance of the loss and its gradient per sampler)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    csv_path, png_path = out / "contrast_variance.csv", out / "contrast_variance.png"
    atomic_write_text(csv_path, buf.getvalue())
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    names = [r["sampler"] for r in rows]
    for ax, key, label in ((axes[0], "loss_var", "Var of L_contrast"), (axes[1], "grad_var", "Var of its gradient")):
        vals = [r[key] for r in rows]
        bars = ax.bar(names, vals, color=[f"C{i}" for i in range(len(rows))])
        ratio = "loss_var_ratio" if key == "loss_var" else "grad_var_ratio"
        for bar, r in zip(bars, rows):
            ax.annotate(f"{r[ratio]:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8)  # fmt: skip
        ax.set(ylabel=label)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        f"Sampler variance at fixed weights{': ' + title if title else ''} (ratio to NS above bars)", fontsize=9
    )
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return csv_path, png_path
