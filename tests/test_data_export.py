"""`arco data export`: split volumes -> NIfTI images/labels that read back identically."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from arco.cli import main
from arco.data import DataConfig, build_data
from arco.data.phantom import generate_phantom2d


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph") / "p2d"
    generate_phantom2d(root, subjects=5, seed=3, size=32)
    return root


def test_export_round_trip(phantom, tmp_path):
    out = tmp_path / "nifti"
    assert main(["data", "export", str(phantom), "--split", "test", "--out", str(out)]) == 0
    test = build_data(DataConfig(dataset="phantom2d", root=str(phantom), generate=False, labeled="1")).test
    assert test, "the tiny phantom must have test cases"
    for v in test:
        img = nib.load(str(out / "images" / f"{v.case_id}.nii.gz"))
        lab = nib.load(str(out / "labels" / f"{v.case_id}.nii.gz"))
        # NIfTI holds (X, Y, Z); our arrays are (Z, Y, X).
        np.testing.assert_allclose(np.asarray(img.dataobj).T, v.image, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(lab.dataobj).T, v.label)
        np.testing.assert_array_equal(img.affine, lab.affine)


def test_export_refuses_to_overwrite(phantom, tmp_path, capsys):
    out = tmp_path / "nifti"
    assert main(["data", "export", str(phantom), "--out", str(out)]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    assert main(["data", "export", str(phantom), "--out", str(out)]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}


def test_export_missing_root(tmp_path, capsys):
    assert main(["data", "export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) != 0
    assert "nope" in capsys.readouterr().err
