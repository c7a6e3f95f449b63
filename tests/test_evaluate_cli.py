"""`arco evaluate` (files and checkpoint modes), arco.evaluation.report and `arco curves`."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary

from arco.checkpoint import save_checkpoint
from arco.cli import main
from arco.evaluation import evaluate, evaluate_arrays, plot_training_curves

AFFINE = np.array([[0.0, 0.0, -2.5, 10.0], [0.0, 0.8, 0.0, -4.0], [1.2, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
ZOOMS = (1.2, 0.8, 2.5)  # nibabel (i, j, k) voxel sizes of AFFINE


def _save(path, arr, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.uint8), affine), str(path))


def _cases():
    """Three label pairs in nibabel order (X, Y, Z); case c has class 2 missing from the prediction."""
    rng = np.random.default_rng(0)
    out = {}
    for i, name in enumerate(["a", "b", "c"]):
        gt = np.zeros((20, 18, 8), np.uint8)
        gt[4:14, 3:12, 2:6] = 1
        gt[6:10, 5:9, 3:5] = 2
        pred = gt.copy()
        pred[rng.integers(0, 20, 30), rng.integers(0, 18, 30), rng.integers(0, 8, 30)] = 1
        pred[3 + i : 12 + i, 3:11, 2:5] = np.where(
            pred[3 + i : 12 + i, 3:11, 2:5] == 0, 1, pred[3 + i : 12 + i, 3:11, 2:5]
        )
        if name == "c":
            pred[pred == 2] = 1
        out[name] = (pred, gt)
    return out


@pytest.fixture
def folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    cases = _cases()
    for name, (pred, gt) in cases.items():
        _save(pred_dir / f"{name}.nii.gz", pred)
        _save(gt_dir / f"{name}.nii.gz", gt)
    return pred_dir, gt_dir, cases


def test_evaluate_files(folders, tmp_path, capsys):
    pred_dir, gt_dir, cases = folders
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| mean |" in printed and "empty_pred 1" in printed
    with open(out / "per_case.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == [
        "case",
        "class",
        "dice",
        "jaccard",
        "hd95",
        "asd",
        "hd95_mm",
        "asd_mm",
        "empty",
    ]
    assert len(rows) == 6 and all(v != "" for r in rows for v in r.values())
    by_key = {(r["case"], r["class"]): r for r in rows}
    pred, gt = cases["a"]
    r = by_key[("a", "1")]
    assert float(r["dice"]) == pytest.approx(medpy_binary.dc(pred == 1, gt == 1), rel=1e-6)
    assert float(r["hd95"]) == pytest.approx(medpy_binary.hd95(pred == 1, gt == 1), rel=1e-6)
    assert float(r["asd_mm"]) == pytest.approx(medpy_binary.asd(pred == 1, gt == 1, voxelspacing=ZOOMS), rel=1e-6)
    assert by_key[("c", "2")]["empty"] == "empty_pred" and by_key[("a", "2")]["empty"] == "none"
    summary = json.loads((out / "summary.json").read_text())
    dice = [[float(by_key[(c, k)]["dice"]) for k in ("1", "2")] for c in "abc"]
    assert summary["mean"]["dice"] == pytest.approx(np.mean(dice))
    assert summary["std"]["dice"] == pytest.approx(np.std(np.mean(dice, axis=1)))
    assert summary["per_class"]["2"]["mean"]["dice"] == pytest.approx(np.mean([d[1] for d in dice]))
    assert summary["empty_counts"] == {"both_empty": 0, "empty_pred": 1, "empty_gt": 0}
    assert summary["compat"] == "default" and summary["num_cases"] == 3
    assert (out / "summary.md").read_text().startswith("# Evaluation summary")
    overlays = sorted(p.name for p in out.glob("overlay_*.png"))
    assert len(overlays) == 3 and overlays[0].startswith("overlay_best_")
    assert not list(out.glob(".*tmp"))
    from _html import parse_page

    page = parse_page((out / "report.html").read_text())
    assert {"a", "b", "c", str(pred_dir), str(gt_dir)} <= page.cells and {"Dice 1", "Dice 2"} <= page.headers
    assert page.images == set(overlays) and f"open {out / 'report.html'}" in printed


def test_evaluate_files_reference_compat(folders, tmp_path):
    pred_dir, gt_dir, _ = folders
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--pred",
        str(pred_dir),
        "--gt",
        str(gt_dir),
        "--out",
        str(out),
        "--compat",
        "reference",
    ]
    assert main([*args, "--num-classes", "3"]) == 0
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    missed = next(r for r in rows if r["case"] == "c" and r["class"] == "2")
    assert (float(missed["dice"]), float(missed["hd95"])) == (0.0, 0.0)
    assert json.loads((out / "summary.json").read_text())["compat"] == "reference"


def _break(folder, name, arr=None, affine=AFFINE):
    _save(folder / name, arr if arr is not None else np.zeros((20, 18, 8), np.uint8), affine)


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda p, g: _break(p, "b.nii.gz", np.zeros((20, 18, 9), np.uint8)),
            r"geometry differs.*pred/b.nii.gz",
        ),
        (lambda p, g: _break(p, "b.nii.gz", affine=AFFINE * 1.01), r"gt/b.nii.gz.*affine"),
        (lambda p, g: (g / "c.nii.gz").unlink(), r"missing in --gt: c.nii.gz"),
        (lambda p, g: (p / "a.nii.gz").unlink(), r"missing in --pred: a.nii.gz"),
        (lambda p, g: (p / "notes.txt").write_text("x"), r"not images.*notes.txt"),
        (
            lambda p, g: _break(p, "a.nii.gz", np.full((20, 18, 8), 7, np.uint8)),
            r"a.nii.gz: labels 7..7 outside 0..2",
        ),
    ],
)
def test_evaluate_files_bad_input(folders, tmp_path, capsys, damage, match):
    pred_dir, gt_dir, _ = folders
    damage(pred_dir, gt_dir)
    out = tmp_path / "eval"
    args = ["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out), "--num-classes", "3"]
    assert main(args) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert re.search(match, err), err
    assert not out.exists()  # nothing half-written, not even the folder


def test_evaluate_unwritable_out(folders, tmp_path, capsys):
    pred_dir, gt_dir, _ = folders
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(blocker / "sub")]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot be created" in err and f"{blocker} is a file, not a folder" in err


def test_evaluate_needs_one_mode(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path), "--out", str(tmp_path / "o")]) != 0
    assert "--gt" in capsys.readouterr().err


def test_subprocess_bad_input_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arco",
            "evaluate",
            "--pred",
            str(tmp_path / "nope"),
            "--gt",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "does not exist" in " ".join(proc.stderr.split())


# ----- library: evaluate() with a predictor on duck-typed volumes -----


class _Vol:
    def __init__(self, case_id, image, label, spacing=None):
        self.case_id, self.image, self.label, self.spacing = case_id, image, label, spacing


def test_evaluate_predictor_on_volumes(tmp_path):
    rng = np.random.default_rng(0)
    vols = []
    for i in range(4):
        image = rng.standard_normal((3, 16, 16)).astype(np.float32)
        label = (image > 0.3 * i).astype(np.int64)
        vols.append(_Vol(f"case{i}", image, label, spacing=(2.0, 1.0, 1.0)))
    result = evaluate(
        lambda x: torch.cat([-x, x], 1),
        vols,
        num_classes=2,
        spatial_dims=2,
        patch_size=(16, 16),
        class_names=["bg", "fg"],
        out_dir=tmp_path,
        overlays=3,
    )
    assert result.summary["per_class"]["fg"]["mean"]["dice"] == result.summary["mean"]["dice"]
    dice = [r["dice"] for r in result.rows]
    assert dice[0] == 1.0 and dice[-1] < 1.0  # case0 is predicted exactly, the others over-segment
    assert "hd95_mm" in result.summary["metrics"]
    assert {"overlay_worst", "overlay_median", "overlay_best"} <= set(result.files)
    assert result.files["overlay_best"].name == "overlay_best_case0.png"
    assert "| fg |" in result.to_markdown()


def test_evaluate_arrays_mixed_spacing_and_errors():
    a = np.zeros((6, 6), np.int64)
    a[1:4, 1:4] = 1
    result = evaluate_arrays([("x", a, a, (1.0, 1.0)), ("y", a, a)], num_classes=2)
    assert result.summary["metrics"] == [
        "dice",
        "jaccard",
        "hd95",
        "asd",
    ]  # mm only if every case has spacing
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_arrays([], num_classes=2)
    with pytest.raises(ValueError, match="class_names"):
        evaluate_arrays([("x", a, a)], num_classes=2, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="has no label"):
        evaluate(lambda x: x, [_Vol("v", a[None].astype(np.float32), None)], 2, 2, (6, 6))


# ----- arco curves -----


def test_curves(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = ["iteration,stage,loss,loss_sup,loss_contrast,val_dice"]
    lines += [f"{i},finetune,{1 / (i + 1)},{0.5 / (i + 1)},{0.1},{'' if i % 5 else 0.1 * i}" for i in range(20)]
    (run / "log.csv").write_text("\n".join(lines) + "\n")
    assert main(["curves", str(run)]) == 0
    png = run / "curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = plot_training_curves(run / "log.csv", tmp_path / "c.png")
    assert out.stat().st_size > 1000
    (run / "log.csv").write_text("step,loss\n1,2\n")
    assert main(["curves", str(run), "--out", str(tmp_path / "x.png")]) != 0
    assert "no 'iteration' column" in capsys.readouterr().err
    assert main(["curves", str(tmp_path / "missing")]) != 0


# ----- checkpoint mode -----


def _checkpoint(path, num_classes=2, config_data=None):
    from arco.models import MODELS

    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": num_classes}
    model = MODELS.build("unet", **kwargs)
    data = {
        "dataset": "phantom2d",
        "spatial_dims": 2,
        "num_classes": num_classes,
        "class_names": None,
        "patch_size": [32, 32],
        "normalization": "zscore",
    }
    save_checkpoint(
        {
            "predictor": {"arch": "unet", "kwargs": kwargs, "state_dict": model.state_dict()},
            "data": data,
            "config": {"data": config_data or {}},
        },
        path,
    )
    return path


def test_checkpoint_num_classes_mismatch(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "best.pt", num_classes=2)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--num-classes", "4"]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "predicts 2 classes but --num-classes is 4" in err and "best.pt" in err


def test_checkpoint_wrong_architecture(tmp_path, capsys):
    from arco.models import MODELS

    ckpt = tmp_path / "bad.pt"
    vnet = MODELS.build("vnet", in_channels=1, num_classes=2, n_filters=2)
    save_checkpoint(
        {
            "predictor": {
                "arch": "unet",
                "kwargs": {"in_channels": 1, "num_classes": 2},
                "state_dict": vnet.state_dict(),
            },
            "data": {},
        },
        ckpt,
    )
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) != 0
    assert "does not fit architecture 'unet'" in " ".join(capsys.readouterr().err.split())


def test_evaluate_checkpoint_on_phantom(tmp_path, capsys):
    # The config's root points nowhere: --data-root redirects it to the phantom made there (explicitly: arco
    # evaluate never generates data).
    from arco.data.phantom import generate_phantom2d

    generate_phantom2d(tmp_path / "data", subjects=8, seed=0, size=32)
    cfg = {
        "dataset": "phantom2d",
        "root": str(tmp_path / "moved"),
        "subjects": 8,
        "labeled": "1",
        "image_size": 32,
        "patch_size": [32, 32],
    }
    ckpt = _checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", num_classes=4, config_data=cfg)
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--checkpoint",
        str(tmp_path / "run"),
        "--data-root",
        str(tmp_path / "data"),
        "--split",
        "val",
        "--out",
        str(out),
        "--num-classes",
        "4",
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert ckpt.is_file() and (tmp_path / "data").is_dir() and not (tmp_path / "moved").exists()
    printed = capsys.readouterr().out
    assert "| LV |" in printed and "| mean |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["per_class"]) == {"RV", "Myo", "LV"} and 0 <= summary["mean"]["dice"] <= 1
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    assert rows and all(v != "" for r in rows for v in r.values())
    assert list(out.glob("overlay_*.png"))


def test_evaluate_compare_runs(tmp_path, capsys):
    """`arco evaluate --compare`: every run scored on the same cases, differences to the first, the qualitative
    panel with each run's Dice on the chosen cases, and one report.html holding them."""
    from _html import parse_page

    cfg = {"dataset": "phantom2d", "root": str(tmp_path / "data"), "subjects": 8, "labeled": "1", "image_size": 32,
           "patch_size": [32, 32]}  # fmt: skip
    from arco.checkpoint import load_checkpoint
    from arco.data.phantom import generate_phantom2d
    from arco.models import MODELS

    generate_phantom2d(tmp_path / "data", subjects=8, seed=0, size=32)  # arco makes data only when asked
    for name in ("a", "b"):
        _checkpoint(tmp_path / name / "checkpoints" / "best.pt", num_classes=4, config_data=cfg)
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "best.pt")  # b: other random weights than a
    torch.manual_seed(1)
    state["predictor"]["state_dict"] = MODELS.build("unet", in_channels=1, num_classes=4).state_dict()
    save_checkpoint(state, tmp_path / "b" / "checkpoints" / "best.pt")

    out = tmp_path / "cmp"
    args = ["evaluate", "--compare", str(tmp_path / "a"), f"B={tmp_path / 'b'}", "--out", str(out), "--overlays", "1"]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "B - a:" in printed and f"open {out / 'report.html'}" in printed
    s = json.loads((out / "comparison.json").read_text())
    assert s["reference"] == "a" and list(s["runs"]) == ["a", "B"] and s["differences"][0]["run"] == "B"
    per_case = {}
    for run, folder in (("a", "a"), ("B", "B")):
        rows = list(csv.DictReader(open(out / folder / "per_case.csv")))
        assert {r["class"] for r in rows} == {"RV", "Myo", "LV"}
        for case in {r["case"] for r in rows}:
            per_case[(run, case)] = np.mean([float(r["dice"]) for r in rows if r["case"] == case])
        assert (out / folder / "report.html").is_file()
    mean_b_minus_a = np.mean([per_case[("B", c)] - per_case[("a", c)] for (r, c) in per_case if r == "a"])
    assert s["differences"][0]["mean"] == pytest.approx(mean_b_minus_a)
    # the panel: the reference's median case first, every run's prediction titled with its Dice on that case
    ref = {c: d for (r, c), d in per_case.items() if r == "a"}
    ranked = sorted(ref, key=lambda c: (ref[c], c))
    q = s["qualitative"]
    assert q["rows"][0].startswith(f"{ranked[(len(ranked) - 1) // 2]}, slice ")
    for label, titles in zip(q["rows"], q["titles"]):
        case = label.split(",")[0]
        assert titles == ["image", "ground truth", f"a\nDice {per_case[('a', case)]:.3f}",
                          f"B\nDice {per_case[('B', case)]:.3f}"]  # fmt: skip
    page = parse_page((out / "report.html").read_text())
    assert {"a", "B", *ref} <= page.cells and {"RV", "Myo", "LV", "Δ mean Dice"} <= page.headers
    assert {"qualitative.png"} <= page.images and not page.external
    assert sorted(link for link in page.links if link.endswith("report.html")) == ["B/report.html", "a/report.html"]
    assert all((out / link).is_file() for link in page.links if link.endswith("report.html"))
    overlays = sorted(name.split("_")[0] for name in page.images if "/overlay_" in name)
    assert overlays == ["B/overlay", "a/overlay"]  # one per run (--overlays 1)

    assert main(["evaluate", "--compare", str(tmp_path / "a"), "--out", str(tmp_path / "x")]) != 0
    assert "at least two runs" in capsys.readouterr().err
