"""Evaluate a predictor (or prediction arrays) on whole cases; write per-case CSV, summaries, overlays and
``report.html``."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import choice
from arco._io import atomic_write_text
from arco.evaluation.html import evaluation_page
from arco.evaluation.inference import predict_volume
from arco.evaluation.metrics import COMPAT_MODES, EMPTY_CASES, METRICS, MM_METRICS, case_metrics
from arco.evaluation.overlay import pick_slice, save_overlay

__all__ = ["EvaluationResult", "evaluate", "evaluate_arrays", "evaluate_model", "check_writable"]

logger = logging.getLogger(__name__)

_LABELS = {
    "dice": "Dice",
    "jaccard": "Jaccard",
    "hd95": "HD95",
    "asd": "ASD",
    "hd95_mm": "HD95 mm",
    "asd_mm": "ASD mm",
}
_POLICY = {
    "default": "both empty -> Dice 1, distances 0; empty prediction or empty GT -> Dice 0, distances = image diagonal",
    "reference": "SSL4MIS calculate_metric_percase: empty GT with a prediction -> Dice 1, HD95 0; "
    "empty prediction -> all 0",
}


@dataclass
class EvaluationResult:
    """Per-case rows, summary statistics and the files written.

    Attributes:
        rows: one dict per case and foreground class: ``case``, ``class`` (name), ``class_index``, the
            metrics and ``empty`` (``""`` or the empty-mask case).
        summary: ``{"num_cases", "num_classes", "compat", "metrics", "mean": {metric: value}, "std": {...},
            "per_class": {name: {"class", "mean", "std", "empty"}}, "empty_counts", "empty_policy"}``.
            ``mean``/``std`` are over cases of the per-case mean over foreground classes (std with ddof=0).
        files: written files by role (``per_case``, ``summary_json``, ``summary_md``, ``report_html``,
            ``overlay_<rank>``).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The summary as a Markdown table (mean ± std over cases), followed by the empty-mask counts."""
        s = self.summary
        metrics = s["metrics"]
        lines = [
            "| class | " + " | ".join(_LABELS[m] for m in metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        for name, entry in [*s["per_class"].items(), ("mean", {"mean": s["mean"], "std": s["std"]})]:
            cells = [f"{entry['mean'][m]:.4f} ± {entry['std'][m]:.4f}" for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        counts = ", ".join(f"{k} {v}" for k, v in s["empty_counts"].items())
        lines += [
            "",
            f"{s['num_cases']} cases, compat={s['compat']!r}; distances in voxels"
            + (" (and mm)" if "hd95_mm" in metrics else "")
            + f". Empty masks (case x class): {counts}. Policy: {s['empty_policy']}.",
        ]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(self.summary, indent=2)


def check_writable(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check that it is writable; raise ``PermissionError`` if not."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} exists and is not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create output folder {out}: {exc.strerror}; choose another --out") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {out} is not writable; choose another --out or fix its permissions")
    return out


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """Names of classes 1..C-1 (``class_names`` may include the background name or not)."""
    if class_names is None:
        return [str(c) for c in range(1, num_classes)]
    names = [str(n) for n in class_names]
    if len(names) == num_classes:
        return names[1:]
    if len(names) == num_classes - 1:
        return names
    raise ValueError(
        f"class_names must hold {num_classes} names (with background) or {num_classes - 1}, got {len(names)}: {names}"
    )


@dataclass
class _Case:
    case_id: str
    mean_dice: float
    gt: np.ndarray  # the overlay slice only: keeping whole predictions of 3D cases would cost GBs
    pred: np.ndarray
    image: np.ndarray | None
    slice_index: int


def _score_case(case_id, pred, gt, image, spacing, num_classes, names, compat, rows) -> _Case:
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"case {case_id}: prediction shape {np.shape(pred)} differs from label shape {np.shape(gt)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty-mask cases are counted in the summary instead
        per_class = case_metrics(pred, gt, num_classes, spacing=spacing, compat=compat)
    for r in per_class:
        c = int(r.pop("class"))
        rows.append({"case": case_id, "class": names[c - 1], "class_index": c, **r})
    k = pick_slice(gt)
    if image is not None and np.ndim(image) == np.ndim(gt) + 1:
        image = np.asarray(image)[0]  # several channels: the overlay shows the first (e.g. T2)
    # A copy, not a view: a view of slice k would keep the whole prediction (and a memory-mapped case) alive
    # until the report is written, i.e. one volume per case.
    sl = (lambda a: None if a is None else np.array(np.asarray(a)[k])) if np.ndim(gt) == 3 else (lambda a: a)
    mean_dice = float(np.mean([r["dice"] for r in per_class]))
    return _Case(case_id, mean_dice, sl(gt), sl(pred), sl(image), k)


def _summarise(rows, names, num_classes, compat, num_cases) -> dict[str, Any]:
    metrics = list(METRICS) + (list(MM_METRICS) if rows and all("hd95_mm" in r for r in rows) else [])

    def stats(values: list[float]) -> tuple[float, float]:
        a = np.asarray(values, dtype=np.float64)
        return float(a.mean()), float(a.std())

    per_class = {}
    for c, name in enumerate(names, start=1):
        sel = [r for r in rows if r["class_index"] == c]
        ms = {m: stats([r[m] for r in sel]) for m in metrics}
        per_class[name] = {
            "class": c,
            "mean": {m: v[0] for m, v in ms.items()},
            "std": {m: v[1] for m, v in ms.items()},
            "empty": {e: sum(r["empty"] == e for r in sel) for e in EMPTY_CASES},
        }
    cases = list(dict.fromkeys(r["case"] for r in rows))
    case_means = {m: [np.mean([r[m] for r in rows if r["case"] == cid]) for cid in cases] for m in metrics}
    overall = {m: stats(v) for m, v in case_means.items()}
    return {
        "num_cases": num_cases,
        "num_classes": num_classes,
        "compat": compat,
        "metrics": metrics,
        "mean": {m: v[0] for m, v in overall.items()},
        "std": {m: v[1] for m, v in overall.items()},
        "per_class": per_class,
        "empty_counts": {e: sum(r["empty"] == e for r in rows) for e in EMPTY_CASES},
        "empty_policy": _POLICY[compat],
    }


def _per_case_csv(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "class", *metrics, "empty"])
    for r in rows:
        writer.writerow([r["case"], r["class"], *(repr(float(r[m])) for m in metrics), r["empty"] or "none"])
    return buf.getvalue()


def _finish(cases: list[_Case], rows, names, num_classes, compat, out_dir, overlays, report_meta) -> EvaluationResult:
    if not cases:
        raise ValueError("nothing to evaluate: no cases were given")
    summary = _summarise(rows, names, num_classes, compat, len(cases))
    result = EvaluationResult(rows=rows, summary=summary)
    if out_dir is None:
        return result
    out = Path(out_dir)
    files = {
        "per_case": out / "per_case.csv",
        "summary_json": out / "summary.json",
        "summary_md": out / "summary.md",
        "report_html": out / "report.html",
    }
    ranked = sorted(cases, key=lambda c: (c.mean_dice, c.case_id))
    picks = sorted({int(round(i)) for i in np.linspace(0, len(ranked) - 1, min(int(overlays), len(ranked)))})
    for j, idx in enumerate(picks):
        tag = {0: "worst", len(ranked) - 1: "best"}.get(idx, "median" if len(picks) == 3 else f"rank{j}")
        case = ranked[idx]
        path = out / f"overlay_{tag}_{case.case_id}.png"
        save_overlay(
            path,
            case.gt,
            case.pred,
            case.image,
            f"{case.case_id} ({tag}, mean Dice {case.mean_dice:.3f}), slice {case.slice_index}",
            num_classes,
            class_names=names,
        )
        files[f"overlay_{tag}"] = path
    atomic_write_text(files["per_case"], _per_case_csv(rows, summary["metrics"]))
    atomic_write_text(files["summary_json"], result.to_json() + "\n")
    atomic_write_text(files["summary_md"], "# Evaluation summary\n\n" + result.to_markdown() + "\n")
    overlay_files = {k: v for k, v in files.items() if k.startswith("overlay_")}
    evaluation_page(rows, summary, overlay_files, report_meta).write(files["report_html"])
    result.files = files
    return result


def evaluate_arrays(
    pairs: Iterable[Sequence[Any]],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    compat: str = "default",
    out_dir: str | os.PathLike | None = None,
    overlays: int = 3,
    report_meta: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Score given predictions against labels.

    Args:
        pairs: tuples ``(case_id, pred, gt)``, ``(case_id, pred, gt, spacing)`` or ``(case_id, pred, gt,
            spacing, image)``; ``pred``/``gt`` int label arrays of the same shape, ``spacing`` per axis in mm
            or None (mm metrics are reported only when every case has one), ``image`` for overlays or None.
        num_classes: classes including background.
        class_names: names with or without the background entry (default: class indices).
        compat: empty-mask policy, ``"default"`` or ``"reference"`` (see :func:`~.metrics.case_metrics`).
        out_dir: where to write ``per_case.csv``, ``summary.json``, ``summary.md``, overlay PNGs and
            ``report.html`` (atomically, after every case is scored); None writes nothing.
        overlays: number of overlay PNGs (3 = worst, median and best case by mean Dice).
        report_meta: what ``report.html`` says about the evaluation besides the numbers: ``title``, ``source``
            (key/value pairs such as the checkpoint and the split) and ``config`` (a dict shown as YAML).

    Returns:
        :class:`EvaluationResult`.

    Raises:
        ValueError: empty input, shape mismatch, labels out of range, bad ``compat`` or ``class_names``.
    """
    choice("compat", compat, COMPAT_MODES, where="evaluate_arrays()")
    names = _class_names(class_names, num_classes)
    if out_dir is not None:
        check_writable(out_dir)
    rows: list[dict[str, Any]] = []
    cases = []
    for item in pairs:
        case_id, pred, gt, spacing, image = (*item, None, None)[:5]
        cases.append(
            _score_case(
                str(case_id),
                np.asarray(pred),
                np.asarray(gt),
                image,
                spacing,
                num_classes,
                names,
                compat,
                rows,
            )
        )
    return _finish(cases, rows, names, num_classes, compat, out_dir, overlays, report_meta)


def evaluate(
    predict_fn: Callable[[Any], Any],
    volumes: Iterable[Any],
    num_classes: int,
    spatial_dims: int,
    patch_size: Sequence[int],
    class_names: Sequence[str] | None = None,
    compat: str = "default",
    out_dir: str | os.PathLike | None = None,
    overlays: int = 3,
    batch_size: int = 16,
    device: str = "cpu",
    stride: Sequence[int] | None = None,
    overlap: float | Sequence[float] = 0.5,
    blend: str = "gaussian",
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    report_meta: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Predict every volume with :func:`arco.evaluation.predict_volume` and score it against its label.

    Args:
        predict_fn: ``(B, C_in, *patch) -> (B, C, *patch)`` logits (see ``predict_volume``).
        volumes: objects with ``case_id``, ``image (D, H, W)`` or ``(C_in, D, H, W)``, ``label (D, H, W)`` and
            ``spacing`` (or None) attributes, e.g. ``arco.data.Volume``.
        num_classes, class_names, compat, out_dir, overlays, report_meta: as in :func:`evaluate_arrays`.
        spatial_dims, patch_size, batch_size, device, stride, overlap, blend: as in ``predict_volume``.
        progress: optional wrapper around the iterable of volumes (the CLI passes ``tqdm``).

    Returns:
        :class:`EvaluationResult`; ``result.summary["mean"]["dice"]`` is the mean Dice over cases.

    Raises:
        ValueError: a volume without label, shape mismatch, or the errors of ``predict_volume``.
    """
    choice("compat", compat, COMPAT_MODES, where="evaluate()")
    names = _class_names(class_names, num_classes)
    if out_dir is not None:
        check_writable(out_dir)
    rows: list[dict[str, Any]] = []
    cases = []
    for vol in progress(volumes) if progress is not None else volumes:
        if getattr(vol, "label", None) is None:
            raise ValueError(f"case {vol.case_id} has no label; evaluation needs labelled volumes")
        pred = predict_volume(
            predict_fn,
            vol.image,
            spatial_dims,
            patch_size,
            batch_size=batch_size,
            device=device,
            stride=stride,
            overlap=overlap,
            blend=blend,
        )
        spacing = getattr(vol, "spacing", None)
        cases.append(
            _score_case(str(vol.case_id), pred, vol.label, vol.image, spacing, num_classes, names, compat, rows)
        )
        logger.debug("%s: mean Dice %.4f", vol.case_id, cases[-1].mean_dice)
    return _finish(cases, rows, names, num_classes, compat, out_dir, overlays, report_meta)


def evaluate_model(
    model: Any,
    volumes: Iterable[Any],
    num_classes: int,
    spatial_dims: int,
    patch_size: Sequence[int],
    *,
    device: Any = "cpu",
    amp_dtype: Any = None,
    **kwargs: Any,
) -> EvaluationResult:
    """Evaluate a segmentation network on whole volumes: the one path used by validation during training, the demo
    and ``arco evaluate``.

    ``model(x)`` may return logits or an object with a ``logits`` attribute (arco's ``SegOutput``). The model is put
    in eval mode for the evaluation and returned to its previous mode; inference runs under ``torch.no_grad`` and,
    when ``amp_dtype`` is given (CUDA), under autocast. ``kwargs`` are those of :func:`evaluate` (``class_names``,
    ``compat``, ``out_dir``, ``overlays``, ``batch_size``, ``stride``, ``overlap``, ``blend``, ``progress``,
    ``report_meta``).
    """
    import contextlib

    import torch

    dev = torch.device(device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with ctx:
            out = model(x.to(dev))
        return getattr(out, "logits", out).float()

    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.no_grad():
            return evaluate(predict, volumes, num_classes, spatial_dims, patch_size, device=str(dev), **kwargs)
    finally:
        model.train(was_training)
