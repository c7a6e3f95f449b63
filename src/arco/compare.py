"""Compare trained runs on the same test cases: each run's evaluation, the paired differences to a reference run,
the training curves on shared axes, the qualitative panel, and one ``report.html`` (``arco evaluate --compare``,
the demo's report, the study's qualitative panel).

**Which cases the qualitative panel shows** (:func:`choose_cases`): the reference run's median case and its worst
case by mean foreground Dice over the whole case (the median of an even number of cases is the lower of the two
middle ones; ties are broken by case id), each at the slice with the most ground-truth foreground. The median case
shows what the reference typically gets right or wrong, the worst case where it fails; the other runs are shown on
the same slices, so the panel is not chosen in anyone's favour but the reference's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import ArcoError, ConfigError
from arco._io import atomic_write_text
from arco.compare_page import CASE_RULE, safe_name

__all__ = [
    "ComparedRun",
    "choose_cases",
    "compare_runs",
    "write_comparison",
    "data_config_from",
    "panel_rows",
    "parse_runs",
    "differences",
    "case_mean_dice",
]


@dataclass
class ComparedRun:
    """One run of a comparison: its name, folders, evaluation and per-case mean foreground Dice."""

    name: str
    checkpoint: Path
    curves_dir: Path | None = None
    result: Any = None
    case_dice: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None

    @property
    def summary(self) -> dict[str, Any]:
        return self.result.summary


def choose_cases(case_dice: Mapping[str, float]) -> list[tuple[str, str]]:
    """``[("median", case), ("worst", case)]`` from one run's per-case Dice (one entry when they coincide).

    Raises:
        ValueError: no cases.
    """
    if not case_dice:
        raise ValueError("choose_cases(): no cases to choose from")
    ranked = sorted(case_dice, key=lambda c: (case_dice[c], c))
    median, worst = ranked[(len(ranked) - 1) // 2], ranked[0]
    return [("median", median)] + ([("worst", worst)] if worst != median else [])


def case_mean_dice(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per case: the mean Dice over foreground classes, from per-case rows (``case``, ``dice``)."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        acc.setdefault(str(r["case"]), []).append(float(r["dice"]))
    return {c: float(np.mean(v)) for c, v in acc.items()}


def parse_runs(runs: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """``(name, path)`` per run: ``NAME=PATH`` keeps NAME; otherwise the shortest tail of the path that tells
    the runs apart, without the stage folder (``runs/demo/arco/finetune`` -> ``arco``,
    ``study/runs/sg/seed0/finetune`` -> ``sg/seed0`` beside ``ns/seed0``).

    Raises:
        ConfigError: two runs end up with the same name.
    """
    given: list[str | None] = []
    paths: list[Path] = []
    for r in runs:
        name, sep, rest = str(r).partition("=")
        explicit = bool(sep and name and "/" not in name)
        given.append(name if explicit else None)
        paths.append(Path(rest if explicit else str(r)))
    full = [list(p.resolve().parts[1:]) for p in paths]
    short = [t[:-1] if (p / "config.yaml").is_file() and len(t) > 1 else t for p, t in zip(paths, full)]
    names = _names(short, given)
    if len(set(names)) != len(names):  # two stages of one run: keep the stage folder in the name
        names = _names(full, given)
    if len(set(names)) != len(names):
        raise ConfigError(f"--compare: two runs have the same name {names}; name them as NAME=PATH")
    return list(zip(names, paths))


def _names(tails: list[list[str]], given: list[str | None]) -> list[str]:
    names: list[str] = []
    for i, tail in enumerate(tails):
        cand = given[i]
        k = 0
        while cand is None or (given[i] is None and k < len(tail) and _clash(cand, k, i, tails, given)):
            k += 1
            cand = "/".join(tail[-k:])
        names.append(cand)
    return names


def _clash(cand: str, k: int, i: int, tails: list[list[str]], given: list[str | None]) -> bool:
    others = ["/".join(t[-k:]) if given[j] is None else given[j] for j, t in enumerate(tails) if j != i]
    return cand in others


def _stage_siblings(stage: Path) -> int:
    parent = stage.resolve().parent
    return sum(1 for p in parent.iterdir() if (p / "log.csv").is_file())


def _curves_dir(path: Path) -> Path | None:
    """The folder whose logs are the whole run: the parent of a stage of a multi-stage run, else the stage."""
    if not (path / "log.csv").is_file():
        return None
    return path.resolve().parent if _stage_siblings(path) > 1 else path


def data_config_from(config: Mapping[str, Any], data_root: str | os.PathLike | None = None) -> Any:
    """The :class:`arco.data.DataConfig` of a checkpoint's resolved config (``data.root`` replaced when given)."""
    from arco.data import DataConfig

    cfg = dict(config.get("data") or {})
    if not cfg:
        raise ArcoError("the checkpoint holds no data config; re-save it with `arco train`")
    if data_root:
        cfg["root"] = str(data_root)
    return DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})


def _predict_slices(checkpoint: Path, volumes: Sequence[Any], device: str, batch_size: int) -> dict[str, Any]:
    """Case id -> the predicted label slice shown by the panel (the slice with the most GT foreground)."""
    from arco.checkpoint import load_predictor
    from arco.evaluation import predict_volume
    from arco.evaluation.overlay import pick_slice

    model, meta = load_predictor(checkpoint, map_location=device)
    data = meta["data"]
    model.to(device).eval()
    out = {}
    import torch

    with torch.no_grad():
        for vol in volumes:
            pred = predict_volume(
                lambda x: model(x).logits,
                vol.image,
                int(data["spatial_dims"]),
                tuple(data["patch_size"]),
                batch_size=batch_size,
                device=device,
            )
            out[vol.case_id] = pred[pick_slice(vol.label)] if np.ndim(pred) == 3 else pred
    return out


def panel_rows(
    runs: Mapping[str, Path],
    case_dice: Mapping[str, Mapping[str, float]],
    reference: str,
    volumes: Mapping[str, Any],
    device: str = "cpu",
    batch_size: int = 16,
) -> list[Any]:
    """The qualitative panel's rows: the cases :func:`choose_cases` picks from ``reference``'s Dice, each with
    the image, the ground truth and every run's prediction of the same slice.

    Args:
        runs: run name -> checkpoint (file or stage folder), in column order.
        case_dice: run name -> case -> mean foreground Dice of that run on that case.
        reference: the run whose cases are chosen.
        volumes: case id -> labelled volume (``image``, ``label``).
        device, batch_size: inference settings.
    """
    from arco.evaluation.overlay import PanelRow, pick_slice

    chosen = [(tag, c) for tag, c in choose_cases(case_dice[reference]) if c in volumes]
    cases = [volumes[c] for _, c in chosen]
    preds = {name: _predict_slices(Path(ckpt), cases, device, batch_size) for name, ckpt in runs.items()}
    rows = []
    for (tag, case_id), vol in zip(chosen, cases):
        k = pick_slice(vol.label)
        image, gt = np.asarray(vol.image), np.asarray(vol.label)
        image = image[0] if image.ndim == gt.ndim + 1 else image  # several channels: the first
        if gt.ndim == 3:
            image, gt = image[k], gt[k]
        label = f"{case_id}, slice {k}\n({tag} of {reference})"
        rows.append(
            PanelRow(
                label,
                image,
                gt,
                {name: preds[name][case_id] for name in runs},
                {name: case_dice[name][case_id] for name in runs if case_id in case_dice[name]},
            )
        )
    return rows


def _load_data(runs: Sequence[tuple[str, Path]], data_root: Any, split: str) -> tuple[Any, dict[str, Any]]:
    """Build the data of the first run and check that every run was trained on data with the same cases."""
    from arco.checkpoint import load_predictor
    from arco.data import build_data

    metas = {}
    for name, ckpt in runs:
        _, meta = load_predictor(ckpt, map_location="cpu")
        metas[name] = meta
    first = metas[runs[0][0]]
    data = build_data(data_config_from(first.get("config") or {}, data_root))
    for name, meta in metas.items():
        d = meta.get("data") or {}
        if int(d.get("num_classes", -1)) != int(data.num_classes):
            raise ConfigError(
                f"--compare: run {name} predicts {d.get('num_classes')} classes, the data of {runs[0][0]} has "
                f"{data.num_classes}; compare runs trained on the same dataset"
            )
    if not getattr(data, split):
        raise ValueError(f"the {split} split of {first['data'].get('dataset')!r} is empty; nothing to compare")
    return data, metas


def compare_runs(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    split: str = "test",
    data_root: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    overlays: int = 3,
    progress: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate several runs on the same split and write the comparison into ``out``.

    The first run is the reference: differences are ``run - reference`` over test cases (mean foreground Dice
    per case, bootstrap interval and Wilcoxon p as in a study), and the qualitative panel shows its median and
    worst case (module docstring). The data are rebuilt from the first run's config (``data_root`` replaces its
    folder); every run must predict the same classes.

    Writes ``out/<run>/`` (each run's evaluation with its own ``report.html``), ``out/qualitative.png``,
    ``out/curves.png`` (when the runs have training logs), ``out/comparison.json`` and ``out/report.html``.

    Args:
        runs: run folders (a stage folder, or its checkpoint), optionally as ``NAME=PATH``; at least two.
        out: output folder.
        split: ``test`` or ``val``.
        data_root, device, batch_size, overlays: as in ``arco evaluate``.
        progress: optional wrapper around each run's iterable of volumes (the CLI passes tqdm).

    Returns:
        The content of ``comparison.json``.

    Raises:
        ConfigError: fewer than two runs, duplicate names, runs for different label sets.
    """
    from arco.checkpoint import resolve_checkpoint

    if len(runs) < 2:
        raise ConfigError(f"--compare needs at least two runs, got {len(runs)}")
    compared = [
        ComparedRun(name, resolve_checkpoint(p), _curves_dir(p) if p.is_dir() else None) for name, p in parse_runs(runs)
    ]
    data, metas = _load_data([(c.name, c.checkpoint) for c in compared], data_root, split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    volumes = list(getattr(data, split))
    for c in compared:
        _evaluate(c, metas[c.name], data, volumes, split, out, device, batch_size, overlays, progress)
    return write_comparison(compared, volumes, data, out, device, batch_size, split)


def _evaluate(c, meta, data, volumes, split, out, device, batch_size, overlays, progress) -> None:
    from arco.checkpoint import load_predictor
    from arco.evaluation import evaluate_model

    model, _ = load_predictor(c.checkpoint, map_location=device)
    d = meta["data"]
    c.config = meta.get("config")
    c.result = evaluate_model(
        model.to(device),
        progress(volumes) if progress is not None else volumes,
        num_classes=int(d["num_classes"]),
        spatial_dims=int(d["spatial_dims"]),
        patch_size=tuple(d["patch_size"]),
        class_names=d.get("class_names") or data.class_names,
        out_dir=out / safe_name(c.name),
        overlays=overlays,
        batch_size=batch_size,
        device=device,
        report_meta={
            "title": f"Evaluation of {c.name}",
            "source": [("run", c.name), ("checkpoint", str(c.checkpoint)), ("split", split)],
            "config": c.config,
        },
    )
    c.case_dice = case_mean_dice(c.result.rows)


def differences(compared: Sequence[ComparedRun]) -> list[dict[str, Any]]:
    """Each run after the first against the first: paired over the test cases both scored."""
    from arco.study.stats import paired_difference

    ref = compared[0]
    out = []
    for c in compared[1:]:
        cases = sorted(set(c.case_dice) & set(ref.case_dice))
        d = paired_difference([c.case_dice[k] for k in cases], [ref.case_dice[k] for k in cases])
        out.append({"run": c.name, "reference": ref.name, **d})
    return out


def write_comparison(
    compared: Sequence[ComparedRun],
    volumes: Sequence[Any],
    data: Any,
    out: Path,
    device: str = "cpu",
    batch_size: int = 16,
    split: str = "test",
    title: str = "Comparison",
    intro: Callable[[Any], None] | None = None,
    curves: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the comparison of evaluated runs: ``qualitative.png``, ``curves.png`` (runs with logs),
    ``comparison.json`` and ``report.html`` into ``out``; returns ``comparison.json``'s content.

    Args:
        compared: the runs, reference first, each with its ``result`` and ``case_dice``.
        volumes: the evaluated cases (labelled volumes).
        data: their dataset (``num_classes``, ``class_names``).
        out: output folder.
        device, batch_size: inference settings of the panel's predictions.
        split: the split's name (for the text).
        title, intro: the page's title and an optional function adding sections at its top.
        curves: the logged quantities drawn in ``curves.png`` (default: validation Dice and every loss but the
            total, which sums different terms for different methods).
    """
    from arco.evaluation.curves import plot_compared_curves
    from arco.evaluation.overlay import save_panel

    ref = compared[0]
    rows = panel_rows(
        {c.name: c.checkpoint for c in compared},
        {c.name: c.case_dice for c in compared},
        ref.name,
        {v.case_id: v for v in volumes},
        device,
        batch_size,
    )
    panel = save_panel(
        out / "qualitative.png",
        rows,
        data.num_classes,
        data.class_names,
        title=f"{split} cases: {CASE_RULE} ({ref.name}); Dice over the whole case",
    )
    figures = {"qualitative": out / "qualitative.png"}
    logged = {c.name: c.curves_dir for c in compared if c.curves_dir is not None}
    if logged:
        if curves is None:
            from arco.evaluation.curves import read_run_log

            cols = [c for path in logged.values() for c in read_run_log(path)[0]]
            curves = ["val_dice", *dict.fromkeys(c for c in cols if c.startswith("loss_"))]
        plot_compared_curves(logged, out / "curves.png", curves, title="training curves")
        figures["curves"] = out / "curves.png"
    summary = {
        "split": split,
        "reference": ref.name,
        "runs": {c.name: {"checkpoint": str(c.checkpoint), "mean": c.summary["mean"]} for c in compared},
        "differences": differences(compared),
        "qualitative": {"rule": CASE_RULE, "rows": panel["rows"], "titles": panel["titles"]},
        "figures": {k: v.name for k, v in figures.items()},
    }
    atomic_write_text(out / "comparison.json", json.dumps(summary, indent=2, default=str) + "\n")
    from arco.compare_page import comparison_page

    comparison_page(compared, summary, figures, out, title, intro).write(out / "report.html")
    return summary
