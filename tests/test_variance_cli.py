"""`arco variance`: in-process runs on tiny settings, input errors, and one subprocess check."""

from __future__ import annotations

import csv
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from arco._checks import DataError
from arco.cli import main
from arco.variance import COLUMNS, load_study_input, run_study, synthetic_image, theory

TINY = ["--num", "8", "32", "--grid", "2", "4", "--trials", "40", "--no-progress"]


def read_rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_builtin_example_writes_csv_and_png(tmp_path, capsys):
    assert main(["variance", *TINY, "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "variance.csv")
    assert len(rows) == 4 and list(rows[0]) == list(COLUMNS)
    assert (tmp_path / "variance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "built-in phantom" in out and "SG/NS" in out and "pred wr" in out


def test_nifti_3d_with_label_class(tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(10, 12, 8)).astype(np.float32)
    label = np.zeros((10, 12, 8), dtype=np.int16)
    label[2:8, 3:10, 1:7] = 1
    image[label == 1] += 3.0
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "lab.nii.gz")
    args = ["--image", str(tmp_path / "img.nii.gz"), "--label", str(tmp_path / "lab.nii.gz"), "--class", "1"]
    assert main(["variance", *args, *TINY, "--out", str(tmp_path / "out")]) == 0
    rows = read_rows(tmp_path / "out" / "variance.csv")
    assert int(rows[0]["candidates"]) == int((label == 1).sum())
    assert abs(float(rows[0]["true_mean"]) - image[label == 1].mean()) < 1e-5
    assert "3D sampling" in capsys.readouterr().out


def test_npy_and_png_inputs(tmp_path):
    arr = np.linspace(0, 1, 20 * 24).reshape(20, 24)
    np.save(tmp_path / "a.npy", arr)
    values, mask, _ = load_study_input(tmp_path / "a.npy")
    assert values.shape == mask.shape == (1, 20, 24) and bool(mask.all())
    from PIL import Image

    Image.fromarray((arr * 255).astype(np.uint8)).save(tmp_path / "a.png")
    values, _, _ = load_study_input(tmp_path / "a.png")
    assert values.shape == (1, 20, 24) and float(values.max()) == 255.0


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda d: ["--image", str(d / "missing.nii.gz")], "does not exist"),
        (lambda d: ["--image", str(d / "bad.nii.gz")], "could not be read"),
        (lambda d: ["--image", str(d / "nan.npy")], "NaN"),
        (lambda d: ["--image", str(d / "ok.npy"), "--label", str(d / "small.npy"), "--class", "1"], "shape"),
        (lambda d: ["--image", str(d / "ok.npy"), "--label", str(d / "lab.npy"), "--class", "7"], "absent"),
        (lambda d: ["--image", str(d / "ok.npy"), "--label", str(d / "lab.npy")], "--class"),
        (lambda d: ["--image", str(d / "vec.npy")], "2D or 3D"),
        (lambda d: ["--num", "0"], "--num"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, capsys, setup, match):
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan))
    np.save(tmp_path / "ok.npy", np.ones((6, 6)))
    np.save(tmp_path / "small.npy", np.ones((5, 6)))
    np.save(tmp_path / "lab.npy", np.eye(6, dtype=np.int64))
    np.save(tmp_path / "vec.npy", np.ones(7))
    code = main(["variance", *TINY, *setup(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code != 0 and match in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "o" / "variance.csv").exists()


def test_missing_file_subprocess_has_no_traceback(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "arco",
        "variance",
        "--image",
        str(tmp_path / "nope.nii"),
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    err = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "does not exist" in err and "Traceback" not in err


def test_run_study_library_api_and_theory():
    image, body = synthetic_image(32)
    values, mask = torch.from_numpy(image.astype(np.float64))[None], torch.from_numpy(body)[None]
    rows = run_study(values, mask, [8], [2], trials=50, seed=0)
    assert rows[0]["var_sg"] > 0 and rows[0]["var_ns"] > 0 and rows[0]["trials"] == 50
    pred = theory(values, mask, 8, 2)
    assert pred["var_sg_pred_wor"] <= pred["var_ns_pred_wor"] and pred["gap_pred_wr"] >= 0
    with pytest.raises(DataError, match="empty"):
        run_study(values, torch.zeros_like(mask), [8], [2], trials=5)
