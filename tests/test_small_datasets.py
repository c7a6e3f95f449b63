"""Small and odd datasets: inspect never fails on a label count nobody asked for, too-small folders say what
is possible, `arco evaluate --pred/--gt` names classes, and errors caused by input files name the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from arco._checks import DataError
from arco.cli import main
from arco.data import DataConfig, build_data, inspect_dataset
from arco.data.splits import select_labeled

AFFINE = np.diag([0.9, 0.9, 2.0, 1.0])


def make_tiny_nnunet(root: Path, cases=3) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for i in range(cases):
        lab = rng.integers(0, 3, (12, 10, 4)).astype(np.uint8)
        nib.save(nib.Nifti1Image((lab * 10.0).astype(np.float32), AFFINE), str(root / "imagesTr" / f"c{i}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lab, AFFINE), str(root / "labelsTr" / f"c{i}.nii.gz"))
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_inspect_three_cases_without_labeled(tmp_path, capsys):
    root = make_tiny_nnunet(tmp_path / "tiny")
    info = inspect_dataset(root)
    assert info["cases"] == {"train": 1, "val": 1, "test": 1} and "error" not in info["split"]
    assert main(["data", "inspect", str(root)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "not asked" in out and "train the supervised method" in out


def test_inspect_with_an_impossible_count_prints_then_explains(tmp_path, capsys):
    root = make_tiny_nnunet(tmp_path / "tiny")
    assert main(["data", "inspect", str(root), "--labeled", "3"]) == 2
    captured = capsys.readouterr()
    assert "cases        train 1, val 1, test 1" in captured.out  # the summary is still printed
    err = " ".join(captured.err.split())
    assert "data.labeled=3 but only 1 training patient exists" in err
    assert "of 3 cases, 1 held out for validation and 1 for test" in err
    assert "--method supervised" in err and "add unlabeled cases" in err


def test_select_labeled_says_what_is_possible():
    with pytest.raises(DataError, match=r"only 4 training patients exist in x\. Possible: data\.labeled=1\.\.3 keeps"):
        select_labeled(["a", "b", "c", "d"], "5", "x")
    assert select_labeled(["a", "b"], "2") == ["a", "b"]


def test_semi_supervised_training_on_a_fully_labeled_folder_says_what_to_do(tmp_path, capsys):
    root = make_tiny_nnunet(tmp_path / "tiny")
    args = ["train", "--config", "nnunet", "--stage", "finetune", "--out", str(tmp_path / "run")]
    sets = [f"data.root={root}", "data.labeled=1", "data.patch_size=[16, 16]", "finetune.iterations=1"]
    assert main([*args, *sum((["--set", s] for s in sets), [])]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "unlabeled set is empty" in err and "supervised" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- evaluate class names
@pytest.fixture
def label_folders(tmp_path):
    gt = np.zeros((12, 10, 4), np.uint8)
    gt[2:8, 2:7, 1:3] = 1
    gt[4:6, 3:5, 1:3] = 2
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
        nib.save(nib.Nifti1Image(gt, AFFINE), str(tmp_path / d / "case1.nii.gz"))
    return tmp_path / "pred", tmp_path / "gt"


@pytest.mark.parametrize(
    "extra, header",
    [
        (["--class-names", "RV,Myo"], "| RV |"),
        (["--class-names", "background,RV,Myo"], "| Myo |"),
        (["--labels", "v2"], "| liver |"),
        (["--labels", "msd"], "| edema |"),
    ],
)
def test_evaluate_files_class_names(label_folders, tmp_path, capsys, extra, header):
    pred, gt = label_folders
    if extra[0] == "--labels":
        labels = {"background": 0, "liver": 1, "tumour": 2} if extra[1] == "v2" else {"0": "bg", "1": "edema", "2": "x"}
        (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
        extra = ["--labels", str(tmp_path / "dataset.json")]
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e"), *extra]) == 0
    assert header in capsys.readouterr().out
    rows = (tmp_path / "e" / "per_case.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 foreground classes


def test_evaluate_class_names_errors(label_folders, tmp_path, capsys):
    pred, gt = label_folders
    base = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")]
    assert main([*base, "--class-names", "RV", "--num-classes", "3"]) == 2
    assert "--num-classes 3 but the class names give 2 classes" in " ".join(capsys.readouterr().err.split())
    assert main([*base, "--class-names", "RV"]) == 2  # the labels hold class 2
    assert "case1.nii.gz: labels 0..2 outside 0..1 (--labels/--class-names)" in " ".join(
        capsys.readouterr().err.split()
    )
    (tmp_path / "bad.json").write_text("{not json")
    assert main([*base, "--labels", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not a JSON object" in " ".join(capsys.readouterr().err.split())


def test_unreadable_prediction_names_the_file_not_a_bug(label_folders, tmp_path):
    pred, gt = label_folders
    (pred / "case1.nii.gz").write_bytes(b"this is not a NIfTI file")
    proc = subprocess.run(
        [sys.executable, "-m", "arco", "evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in err and "bug" not in err
    assert f"{pred / 'case1.nii.gz'}: cannot read NIfTI header" in err


def test_data_error_for_truncated_label_in_training_folder(tmp_path):
    root = make_tiny_nnunet(tmp_path / "tiny", cases=4)
    data = (root / "labelsTr" / "c2.nii.gz").read_bytes()
    (root / "labelsTr" / "c2.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"labelsTr/c2\.nii\.gz: cannot read NIfTI"):
        build_data(DataConfig(dataset="nnunet", root=str(root), labeled="1"))
