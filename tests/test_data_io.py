"""NIfTI reading ((Z, Y, X) = transposed nibabel array) and geometry-preserving label writing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from arco._checks import DataError
from arco.data.io import read_list, read_scan, write_label_like
from arco.data.volume import normalize


def _scan(path, shape=(6, 5, 4), zooms=(0.7, 0.8, 2.5)):
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    aff = np.diag([*zooms, 1.0])
    aff[:3, 3] = (10, -5, 3)
    img = nib.Nifti1Image(arr, aff)
    img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return arr, aff


def test_read_scan_transposes_and_keeps_geometry(tmp_path):
    arr, aff = _scan(tmp_path / "s.nii.gz")
    v = read_scan(tmp_path / "s.nii.gz", "none")
    assert v.case_id == "s" and v.image.shape == (4, 5, 6) and v.image.dtype == np.float32
    np.testing.assert_array_equal(v.image, arr.T)
    assert v.spacing == pytest.approx((2.5, 0.8, 0.7)) and np.allclose(v.affine, aff)
    assert v.label is None and v.source.endswith("s.nii.gz")
    assert read_scan(tmp_path / "s.nii.gz", "minmax").image.max() == 1.0


def test_write_label_like_roundtrip(tmp_path):
    _, aff = _scan(tmp_path / "s.nii.gz")
    label = np.zeros((4, 5, 6), np.int64)
    label[1, 2, 3] = 2
    out = write_label_like(label, tmp_path / "s.nii.gz", tmp_path / "pred" / "s.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (6, 5, 4) and img.get_data_dtype() == np.uint8
    assert np.allclose(img.affine, aff) and img.header.get_zooms() == pytest.approx((0.7, 0.8, 2.5))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).T, label)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    with pytest.raises(FileExistsError, match="overwrite"):
        write_label_like(label, tmp_path / "s.nii.gz", out)
    write_label_like(label + 300, tmp_path / "s.nii.gz", out, overwrite=True)
    assert nib.load(str(out)).get_data_dtype() == np.int16
    with pytest.raises(DataError, match="does not match the reference"):
        write_label_like(label[:2], tmp_path / "s.nii.gz", tmp_path / "x.nii.gz")


def test_read_scan_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_scan(tmp_path / "missing.nii.gz")
    with pytest.raises(DataError, match="expected a NIfTI"):
        read_scan(tmp_path / "x.png")
    arr = np.ones((3, 3, 3), np.float32)
    arr[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "inf.nii.gz"))
    with pytest.raises(DataError, match=r"inf\.nii\.gz: image has 1 NaN/inf"):
        read_scan(tmp_path / "inf.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3, 2), np.float32), np.eye(4)), str(tmp_path / "4d.nii.gz"))
    with pytest.raises(DataError, match=r"4d\.nii\.gz: expected a 3D image"):
        read_scan(tmp_path / "4d.nii.gz")


@pytest.mark.parametrize(
    "method, data, expected",
    [
        ("minmax", [1.0, 3.0], [0.0, 1.0]),
        ("minmax", [2.0, 2.0], [0.0, 0.0]),
        ("zscore", [1.0, 3.0], [-1.0, 1.0]),
        ("ct", [-1000.0, -200.0, 25.0, 250.0, 900.0], [0.0, 0.0, 0.5, 1.0, 1.0]),
        ("none", [5.0], [5.0]),
    ],
)
def test_normalize(method, data, expected):
    np.testing.assert_allclose(normalize(np.array(data), method), expected, atol=1e-6)


def test_normalize_bad_name():
    with pytest.raises(ValueError, match="did you mean 'zscore'"):
        normalize(np.zeros(2), "zscor")


def test_read_list(tmp_path):
    (tmp_path / "a.list").write_text("x\n\n y \n")
    assert read_list(tmp_path / "a.list") == ["x", "y"]
    with pytest.raises(DataError, match=r"b\.list: list file not found"):
        read_list(tmp_path / "b.list")
