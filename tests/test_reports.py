"""HTML reports and comparing figures: the page builder, an evaluation's report.html, overlays with a colour per
class, the qualitative panel, training curves (a panel per loss; several runs on shared axes), the study's
figures (groups, no empty panels), the study page, and the demo's progress line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _html import parse_page
from _study import write_study
from arco.compare import choose_cases, parse_runs
from arco.evaluation import evaluate_arrays
from arco.evaluation.curves import curve_panels, plot_compared_curves, plot_training_curves, read_run_log
from arco.evaluation.overlay import CLASS_COLORS, PanelRow, class_color, save_overlay, save_panel
from arco.report_html import Page, fmt

CLASSES = ["background", "RV", "Myo", "LV"]


def _label(shift: int, size: int = 24) -> np.ndarray:
    """Three nested squares (LV inside Myo, RV beside), shifted by ``shift`` pixels, on 4 slices."""
    lab = np.zeros((4, size, size), np.int64)
    lab[:, 6 + shift : 18 + shift, 6:18] = 2
    lab[:, 9 + shift : 15 + shift, 9:15] = 3
    lab[:, 4:10, 18:22] = 1
    return lab


# ----- the page builder -----


def test_page_escapes_sorts_and_embeds(tmp_path):
    page = Page("a <b> & c")
    page.heading("Numbers")
    page.table(["name", "value"], [["<script>x</script>", 0.5], ["nan", float("nan")]], sortable=True)
    png = tmp_path / "f.png"
    save_overlay(png, _label(0)[0], _label(1)[0], None, "t", 4, CLASSES)
    page.figure(png, caption="an overlay")
    page.code("a: 1\n<b>", summary="config")
    text = page.write(tmp_path / "p.html").read_text()
    parsed = parse_page(text)
    assert "<script>x</script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
    assert parsed.sortable == 1 and parsed.scripts == 1 and not parsed.external
    assert {"<script>x</script>", "0.5000", "n/a"} <= parsed.cells and parsed.headings[:2] == ["a <b> & c", "Numbers"]
    assert parsed.images == {"f.png"} and parsed.image_sources[0].startswith("data:image/png;base64,")
    assert 'data-v="0.5"' in text  # the sort key of a number is its value, not its text
    assert fmt(None) == fmt(float("inf")) == "n/a" and fmt(1.23456, 2) == "1.23" and fmt(3) == "3"


# ----- an evaluation's report.html -----


def test_evaluation_report_html_has_every_case_class_and_overlay(tmp_path):
    gt = _label(0)
    pairs = [(f"case{i}", _label(i), gt, (1.0, 1.0, 1.0), np.random.default_rng(i).random(gt.shape)) for i in range(4)]
    meta = {"title": "Evaluation of run-x", "source": [("checkpoint", "run-x/best.pt")], "config": {"data": {"a": 1}}}
    result = evaluate_arrays(pairs, 4, CLASSES, out_dir=tmp_path, report_meta=meta)
    assert result.files["report_html"] == tmp_path / "report.html"
    page = parse_page((tmp_path / "report.html").read_text())
    assert {f"Dice {c}" for c in CLASSES[1:]} <= page.headers and {"case0", "case1", "case2", "case3"} <= page.cells
    assert {"RV", "Myo", "LV", "mean", "run-x/best.pt"} <= page.cells
    overlays = {p.name for p in tmp_path.glob("overlay_*.png")}
    assert len(overlays) == 3 and page.images == overlays and not page.external and page.sortable == 1
    assert "Configuration" in page.headings and "data:" in page.text
    # the per-case mean Dice in the page is the mean of the per-class rows
    dice1 = np.mean([r["dice"] for r in result.rows if r["case"] == "case1"])
    assert f"{dice1:.4f}" in page.cells


def test_overlay_colour_per_class_and_legend(tmp_path):
    legend = save_overlay(tmp_path / "o.png", _label(0)[0], _label(2)[0], None, "x", 4, CLASSES)
    assert legend == ["RV", "Myo", "LV", "ground truth", "prediction"]
    assert len({class_color(c) for c in (1, 2, 3)}) == 3 and class_color(len(CLASS_COLORS) + 1) == class_color(1)
    assert save_overlay(tmp_path / "p.png", _label(0)[0], _label(0)[0], num_classes=3)[:2] == ["class 1", "class 2"]


# ----- the qualitative panel -----


@pytest.mark.parametrize(
    "dice, expected",
    [
        ({"a": 0.5, "b": 0.1, "c": 0.9}, [("median", "a"), ("worst", "b")]),
        ({"a": 0.5, "b": 0.1, "c": 0.9, "d": 0.7}, [("median", "a"), ("worst", "b")]),  # lower of the middle two
        ({"x": 0.3, "y": 0.3, "z": 0.8}, [("median", "y"), ("worst", "x")]),  # ties: by case id
        ({"only": 0.4}, [("median", "only")]),
        ({"a": 0.2, "b": 0.6}, [("median", "a")]),  # median and worst coincide
    ],
)
def test_choose_cases(dice, expected):
    assert choose_cases(dice) == expected


def test_choose_cases_empty():
    with pytest.raises(ValueError, match="no cases"):
        choose_cases({})


def test_panel_shows_every_arm_with_its_dice(tmp_path):
    arms = ["supervised", "ARCO-SG", "mean-teacher"]
    rows = [
        PanelRow(
            f"case{i}, slice 0",
            np.zeros((24, 24)),
            _label(0)[0],
            {a: _label(k + i)[0] for k, a in enumerate(arms)},
            {a: 0.1 * (k + 1) + i / 100 for k, a in enumerate(arms)},
        )  # fmt: skip
        for i in range(2)
    ]
    meta = save_panel(tmp_path / "q.png", rows, 4, CLASSES, title="t")
    assert meta["arms"] == arms and meta["rows"] == ["case0, slice 0", "case1, slice 0"]
    assert meta["titles"][1] == ["image", "ground truth", "supervised\nDice 0.110", "ARCO-SG\nDice 0.210",
                                 "mean-teacher\nDice 0.310"]  # fmt: skip
    assert meta["legend"] == ["RV", "Myo", "LV"] and (tmp_path / "q.png").stat().st_size > 1000
    rows[1].preds.pop("ARCO-SG")
    with pytest.raises(ValueError, match="every row must show the arms"):
        save_panel(tmp_path / "bad.png", rows, 4)
    with pytest.raises(ValueError, match="rows is empty"):
        save_panel(tmp_path / "bad.png", [], 4)


def test_parse_runs_names(tmp_path):
    for stage in ("arco/pretrain", "arco/finetune", "supervised/supervised"):
        (tmp_path / stage).mkdir(parents=True)
        (tmp_path / stage / "config.yaml").write_text("{}\n")
    names = [n for n, _ in parse_runs([tmp_path / "supervised/supervised", tmp_path / "arco/finetune"])]
    assert names == ["supervised", "arco"]
    assert [n for n, _ in parse_runs([tmp_path / "arco/pretrain", tmp_path / "arco/finetune"])] == [
        "pretrain", "finetune"
    ]  # fmt: skip
    assert [n for n, _ in parse_runs([f"A={tmp_path / 'arco/finetune'}", tmp_path / "supervised/supervised"])] == [
        "A", "supervised"
    ]  # fmt: skip


# ----- training curves -----


def _log(path, stage, its, **cols):
    path.mkdir(parents=True, exist_ok=True)
    names = list(cols)
    lines = [",".join(["iteration", "stage", *names])]
    for k, it in enumerate(its):
        lines.append(",".join([str(it), stage, *("" if cols[n][k] is None else str(cols[n][k]) for n in names)]))
    (path / "log.csv").write_text("\n".join(lines) + "\n")


def test_run_curves_panel_per_loss_and_stages_in_order(tmp_path):
    run = tmp_path / "arco"
    _log(run / "pretrain", "pretrain", [50, 100], loss=[1.0, 0.5], loss_sup=[0.8, 0.4], loss_inst=[2.0, 1.0],
         val_dice=[0.2, 0.4])  # fmt: skip
    _log(run / "finetune", "finetune", [25, 50], loss=[0.3, 0.2], loss_sup=[0.1, 0.09], loss_contrast=[4.8, 4.6],
         loss_eqv=[0, 0], val_dice=[None, 0.6])  # fmt: skip
    import os

    os.utime(run / "pretrain" / "log.csv", (1, 1))  # written first
    columns, rows, ends = read_run_log(run)
    assert ends == [100, 150] and [r["iteration"] for r in rows] == [50, 100, 125, 150]
    assert [r["stage"] for r in rows] == ["pretrain", "pretrain", "finetune", "finetune"]
    shown, zero = curve_panels(columns, rows)
    assert shown == ["loss", "loss_sup", "loss_inst", "loss_contrast", "val_dice"] and zero == ["loss_eqv"]
    assert plot_training_curves(run, tmp_path / "c.png").stat().st_size > 1000
    assert plot_training_curves(run / "finetune" / "log.csv", tmp_path / "f.png").is_file()


def test_compared_curves_share_axes_and_skip_missing_losses(tmp_path):
    _log(tmp_path / "sup", "supervised", [50, 100], loss=[0.5, 0.3], loss_sup=[0.5, 0.3], val_dice=[0.4, 0.5])
    _log(tmp_path / "arco", "finetune", [50, 100], loss=[1.0, 0.8], loss_sup=[0.4, 0.2], loss_contrast=[4.8, 4.5],
         loss_eqv=[0, 0], val_dice=[0.3, 0.6])  # fmt: skip
    runs = {"supervised": tmp_path / "sup", "ARCO-SG": tmp_path / "arco"}
    shown = plot_compared_curves(runs, tmp_path / "c.png")
    assert shown == ["val_dice", "loss_sup", "loss_contrast"]  # no total, no all-zero L_eqv, no empty panel
    assert plot_compared_curves(runs, tmp_path / "d.png", ["loss_contrast", "loss_unsup"]) == ["loss_contrast"]
    with pytest.raises(ValueError, match="logs any of"):
        plot_compared_curves(runs, tmp_path / "e.png", ["loss_unsup"])


# ----- a study's figures and page -----


@pytest.fixture
def two_datasets(tmp_path):
    """method (supervised, arco; compared) x dataset (a, b), 2 seeds; only arco on dataset a logs L_contrast."""
    from arco.study import expand, load_study
    from arco.study.collect import RunResult

    grid = {
        "dataset": {"a": ["data.rotation=20"], "b": ["data.rotation=60"]},
        "method": {"supervised": {"method": "supervised"}, "arco": {"method": "arco"}},
    }
    path = write_study(tmp_path / "s.yaml", tmp_path / "d", grid, seeds=(0, 1), compare_to={"method": "supervised"})
    spec = load_study(str(path))
    results = []
    for run in expand(spec, tmp_path / "out"):
        r = RunResult(run, ["dataset", "method"])
        d = 0.5 + 0.1 * (run.arm.values["method"] == "arco") + 0.01 * run.seed
        r.cases = [{"case": c, "class": k, "dice": d + j / 100} for j, c in enumerate("xyz") for k in ("RV", "LV")]
        r.per_class = {k: {"dice": d + 0.01, "hd95": 1.0, "asd": 0.5} for k in ("RV", "LV")}
        r.mean = {"dice": d + 0.01, "jaccard": 0.4, "hd95": 1.0, "asd": 0.5}
        r.val_dice, r.iterations, r.train_seconds, r.stage_ends = d, 4, 1.0, [2, 4]
        contrast = run.arm.name == "a_arco"
        r.curves = [{"iteration": i, "val_dice": d * i / 4, "loss_contrast": 4.0 / i if contrast else None}
                    for i in (1, 2, 3, 4)]  # fmt: skip
        results.append(r)
    return spec, results


def test_study_curves_methods_on_shared_axes_without_empty_panels(two_datasets, tmp_path):
    from arco.study.figures import _curves, arm_groups, compared_axis

    spec, results = two_datasets
    assert compared_axis(spec) == "method" and list(arm_groups(spec)) == ["dataset=a", "dataset=b"]
    panels = _curves(spec, results, tmp_path / "curves.png")
    assert panels == [
        "dataset=a: validation Dice: supervised (n=2), arco (n=2)",
        "dataset=b: validation Dice: supervised (n=2), arco (n=2)",
        "dataset=a: L_contrast: arco (n=2)",
    ]


def test_study_dice_per_arm_grouped_by_dataset(two_datasets, tmp_path):
    from arco.study.figures import _dice_per_arm

    spec, results = two_datasets
    shown = _dice_per_arm(spec, results, tmp_path / "d.png")
    assert shown == {"groups": ["dataset=a", "dataset=b"], "legend": ["supervised", "arco"]}


def test_study_page_has_every_arm_class_and_figure(two_datasets, tmp_path):
    from arco.study.figures import write_figures
    from arco.study.report import summarise, write_report

    spec, results = two_datasets
    figures = write_figures(spec, results, tmp_path)
    assert figures == ["dice_per_arm.png", "curves.png"]
    s = summarise(spec, results, planned=8, failed=[], fast=True)
    s["wall_seconds"] = 12.0
    write_report(s, tmp_path, figures, results)
    page = parse_page((tmp_path / "study.html").read_text())
    assert {"a_supervised", "a_arco", "b_supervised", "b_arco"} <= page.cells
    assert {"Dice RV", "Dice LV", "Δ mean Dice"} <= page.headers and {"x", "y", "z"} <= page.cells
    assert page.images == set(figures) and not page.external and page.sortable >= 3
    assert "Fast smoke run" in page.text and "tiny test study" in page.text
    assert "study file" in page.text and "base: demo" in page.text  # the study file, embedded


# ----- the demo's progress line -----


def test_demo_progress_reads_the_runs_logs(tmp_path):
    from arco.demo import demo_config, training_progress

    arco_cfg, sup_cfg = demo_config(tmp_path, fast=True), demo_config(tmp_path, fast=True, method="supervised")
    jobs = {"supervised": (sup_cfg, tmp_path / "supervised"), "arco": (arco_cfg, tmp_path / "arco")}
    n_pre, n_fine = (s.schedule.iterations for s in arco_cfg.stages)
    n_sup = sup_cfg.stages[0].schedule.iterations
    state = training_progress(jobs)
    assert state == {
        "supervised": {"done": 0, "total": n_sup, "stage": "supervised"},
        "arco": {"done": 0, "total": n_pre + n_fine, "stage": "pretrain"},
    }
    (tmp_path / "arco" / "pretrain").mkdir(parents=True)
    (tmp_path / "arco" / "pretrain" / "summary.json").write_text("{}")
    (tmp_path / "arco" / "finetune").mkdir()
    (tmp_path / "arco" / "finetune" / "log.csv").write_text("iteration,loss\n25,0.5\n50,0.4\n75,0.")  # 75: partial
    (tmp_path / "supervised" / "supervised").mkdir(parents=True)
    (tmp_path / "supervised" / "supervised" / "log.csv").write_text("iteration,loss\n")
    state = training_progress(jobs)
    assert state["arco"] == {"done": n_pre + 50, "total": n_pre + n_fine, "stage": "finetune"}
    assert state["supervised"]["done"] == 0


def test_demo_writes_report_html(tmp_path):
    """The demo's page: both methods, every class, the qualitative panel, the curves and each method's overlays
    (in-process and tiny: the parallel path with its progress line is `test_demo_fast_end_to_end`, slow)."""
    from arco.demo import run_demo

    sets = ("pretrain.iterations=4", "finetune.iterations=4", "schedule.iterations=8", "engine.val_every=4",
            "data.subjects=8", "engine.progress=false")  # fmt: skip
    s = run_demo(tmp_path / "demo", overrides=sets, parallel=False)
    assert s["report"] == str(tmp_path / "demo" / "report.html")
    page = parse_page((tmp_path / "demo" / "report.html").read_text())
    assert {"supervised", "ARCO-SG", "RV", "Myo", "LV", "mean"} <= page.cells
    assert {"Dice supervised", "Dice ARCO-SG", "Δ Dice"} <= page.headers
    assert {"qualitative.png", "curves.png"} <= page.images and not page.external
    assert {n.split("/")[0] for n in page.images if "/overlay_" in n} == {"supervised", "ARCO-SG"}
    reports = [link for link in page.links if link.endswith("report.html")]
    assert sorted(reports) == ["evaluation/arco/report.html", "evaluation/supervised/report.html"]
    titles = json.loads((tmp_path / "demo" / "comparison.json").read_text())["qualitative"]["titles"]
    assert all([t.split("\n")[0] for t in row[2:]] == ["supervised", "ARCO-SG"] for row in titles)
    for method in ("supervised", "arco"):
        assert (tmp_path / "demo" / "evaluation" / method / "report.html").is_file()
