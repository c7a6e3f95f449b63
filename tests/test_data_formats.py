"""File formats: NIfTI, NRRD, MHA/MHD and DICOM series read with their geometry, labels written back in it
(`arco predict --format`), nnU-Net folders with other file endings, and errors that name the file."""

from __future__ import annotations

import json
import locale
import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from arco._checks import DataError
from arco.checkpoint import save_checkpoint
from arco.cli import main
from arco.data import DataConfig, build_data
from arco.data.formats import affine_from_itk, itk_geometry, read_header, read_image, write_image
from arco.data.io import read_scan, write_label_like

SIZE = (12, 10, 5)  # ITK order (x, y, z)
SPACING = (0.7, 0.9, 2.5)
ORIGIN = (10.0, -5.0, 30.0)
_A, _B = math.radians(20), math.radians(8)
# Oblique: rotation about z, then a tilt about x (a right-handed orthonormal matrix, ITK row-major).
_RZ = np.array([[math.cos(_A), -math.sin(_A), 0], [math.sin(_A), math.cos(_A), 0], [0, 0, 1]])
_RX = np.array([[1, 0, 0], [0, math.cos(_B), -math.sin(_B)], [0, math.sin(_B), math.cos(_B)]])
DIRECTION = tuple((_RZ @ _RX).ravel())


def _itk_image(dtype=np.int16, seed=0):
    arr = np.random.default_rng(seed).integers(0, 400, SIZE[::-1]).astype(dtype)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(DIRECTION)
    return img, arr


def write_dicom_series(img, folder, uid="1.2.826.0.1.3680043.2.1125.1.42", prefix="slice"):
    """One DICOM file per slice with the tags GDCM needs to rebuild the geometry (SimpleITK's recipe).

    GDCM's writer switches the process locale to "C" (Python's default text encoding becomes ASCII), so the
    locale is restored afterwards."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(img, folder, uid, prefix)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(img, folder, uid, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for i in range(img.GetDepth()):
        sl = img[:, :, i]
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{uid}.{i + 1}",
            "0020|000d": f"{uid}.100",
            "0020|000e": f"{uid}.200",
            "0020|0037": orientation,
            "0020|0032": "\\".join(f"{v:.10f}" for v in img.TransformIndexToPhysicalPoint((0, 0, i))),
            "0020|0013": str(i + 1),
            "0018|0050": str(img.GetSpacing()[2]),
        }
        for k, v in tags.items():
            sl.SetMetaData(k, v)
        writer.SetFileName(str(folder / f"{prefix}{i:03d}.dcm"))
        writer.Execute(sl)
    return folder


def _make(tmp_path, fmt):
    img, arr = _itk_image()
    if fmt == "dicom":
        return write_dicom_series(img, tmp_path / "series"), arr
    path = tmp_path / f"scan{fmt}"
    sitk.WriteImage(img, str(path))
    return path, arr


def _geometry(path):
    """ITK geometry as SimpleITK itself reads it (the independent reference)."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        img = reader.Execute()
    else:
        img = sitk.ReadImage(str(path))
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def _assert_same_geometry(a, b, atol=1e-4):
    assert a[0] == b[0]
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_allclose(x, y, atol=atol)


FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", "dicom"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_scan_geometry(tmp_path, fmt):
    path, arr = _make(tmp_path, fmt)
    vol = read_scan(path, "none")
    np.testing.assert_array_equal(vol.image, arr.astype(np.float32))  # (Z, Y, X)
    assert vol.spacing == pytest.approx(SPACING[::-1], abs=1e-4)
    np.testing.assert_allclose(vol.affine, affine_from_itk(SPACING, ORIGIN, DIRECTION), atol=1e-4)
    assert read_header(path)[0] == arr.shape


def test_affine_convention_matches_nibabel(tmp_path):
    # SimpleITK writes NIfTI in RAS; nibabel's affine of that file must equal ours from the ITK geometry.
    path, _ = _make(tmp_path, ".nii.gz")
    np.testing.assert_allclose(nib.load(str(path)).affine, affine_from_itk(SPACING, ORIGIN, DIRECTION), atol=1e-5)
    spacing, origin, direction = itk_geometry(affine_from_itk(SPACING, ORIGIN, DIRECTION))
    np.testing.assert_allclose(spacing, SPACING)
    np.testing.assert_allclose(origin, ORIGIN)
    np.testing.assert_allclose(direction, DIRECTION, atol=1e-12)


@pytest.mark.parametrize("src", [".nii.gz", ".nrrd", ".mha", "dicom"])
@pytest.mark.parametrize("out", [".nii.gz", ".nrrd", ".mha"])
def test_write_label_like_round_trip(tmp_path, src, out):
    path, arr = _make(tmp_path, src)
    label = (arr % 3).astype(np.int64)
    target = write_label_like(label, path, tmp_path / f"label{out}")
    _assert_same_geometry(_geometry(target), _geometry(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(target))), label)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def _checkpoint(path, in_channels=1, names=("T2",), normalization="zscore"):
    from arco.models import MODELS

    torch.manual_seed(0)
    kwargs = {"in_channels": in_channels, "num_classes": 3}
    model = MODELS.build("unet", **kwargs)
    data = {
        "dataset": "x",
        "spatial_dims": 2,
        "num_classes": 3,
        "class_names": ["background", "a", "b"],
        "patch_size": [32, 32],
        "normalization": normalization,
        "in_channels": in_channels,
        "channel_names": list(names),
    }
    state = {"arch": "unet", "kwargs": kwargs, "state_dict": model.state_dict()}
    save_checkpoint({"predictor": state, "data": data, "config": {}}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ck") / "best.pt")


@pytest.mark.parametrize(
    "fmt, option, expected",
    [
        (".nrrd", "input", "series.nrrd"),
        (".mha", "input", "series.mha"),
        (".mhd", "input", "series.mha"),
        (".nii", "input", "series.nii"),
        (".nrrd", "nifti", "series.nii.gz"),
        ("dicom", "nifti", "series.nii.gz"),
        ("dicom", "nrrd", "series.nrrd"),
        (".nii.gz", "mha", "series.mha"),
    ],
)
def test_predict_writes_in_the_input_geometry(tmp_path, ckpt, fmt, option, expected, capsys):
    path, _ = _make(tmp_path, fmt)
    if fmt != "dicom":
        path = path.rename(path.with_name("series" + fmt))  # a .mhd keeps pointing at its scan.raw
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", str(ckpt), "--input", str(path), "--out", str(out), "--format", option]
    assert main(args) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [expected]
    _assert_same_geometry(_geometry(out / expected), _geometry(path))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / expected)))
    assert labels.min() >= 0 and labels.max() < 3


def test_predict_dicom_has_no_dicom_output(tmp_path, ckpt, capsys):
    path, _ = _make(tmp_path, "dicom")
    args = ["predict", "--checkpoint", str(ckpt), "--input", str(path), "--out", str(tmp_path / "o")]
    assert main([*args, "--format", "input"]) == 2
    assert "does not write DICOM" in capsys.readouterr().err


def test_dicom_folder_with_two_series_is_an_error(tmp_path):
    img, _ = _itk_image()
    folder = write_dicom_series(img, tmp_path / "two")
    write_dicom_series(img, folder, uid="1.2.826.0.1.3680043.2.1125.1.43", prefix="other")
    with pytest.raises(DataError, match=r"two: holds 2 DICOM series"):
        read_image(folder)


def test_unreadable_and_vector_images_name_the_file(tmp_path):
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\nnonsense")
    with pytest.raises(DataError, match=r"bad\.nrrd: cannot read the image"):
        read_scan(tmp_path / "bad.nrrd")
    with pytest.raises(DataError, match=r"bad\.nrrd: cannot read the image header"):
        read_header(tmp_path / "bad.nrrd")
    rgb = sitk.Image([6, 5, 4], sitk.sitkVectorFloat32, 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(DataError, match=r"rgb\.mha: 3 components per voxel.*one file per channel"):
        read_scan(tmp_path / "rgb.mha")
    with pytest.raises(DataError, match=r"missing\.mha: file not found"):
        read_scan(tmp_path / "missing.mha")


def test_write_image_refuses_to_overwrite(tmp_path):
    out = write_image(np.zeros((2, 3, 4), np.uint8), np.eye(4), tmp_path / "a.nrrd")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_image(np.ones((2, 3, 4), np.uint8), np.eye(4), out)
    with pytest.raises(ValueError, match="can only write"):
        write_image(np.ones((2, 3, 4), np.uint8), np.eye(4), tmp_path / "a.png")


@pytest.mark.parametrize("ending", [".nrrd", ".mha"])
def test_nnunet_folder_with_other_file_ending(tmp_path, ending):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for i in range(5):
        lab = rng.integers(0, 2, (4, 12, 10)).astype(np.uint8)
        img = (lab * 50.0 + rng.standard_normal(lab.shape)).astype(np.float32)
        affine = affine_from_itk(SPACING, ORIGIN, DIRECTION)
        write_image(img, affine, root / "imagesTr" / f"c{i}_0000{ending}")
        write_image(lab, affine, root / "labelsTr" / f"c{i}{ending}")
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1}, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(meta))
    d = build_data(DataConfig(dataset="nnunet", root=str(root), labeled="1", patch_size=(4, 8, 8)))
    assert d.test[0].image.shape == (4, 12, 10) and d.test[0].spacing == pytest.approx(SPACING[::-1], abs=1e-5)
    meta["file_ending"] = ".nii.gz"
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=rf"no images named <case>_0000\.nii\.gz \(found {ending} files"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))


def test_evaluate_files_in_nrrd(tmp_path, capsys):
    affine = affine_from_itk(SPACING, ORIGIN, DIRECTION)
    gt = np.zeros((5, 10, 12), np.uint8)
    gt[1:4, 2:7, 3:9] = 1
    write_image(gt, affine, tmp_path / "gt" / "a.nrrd")
    write_image(gt, affine, tmp_path / "pred" / "a.nii.gz")  # formats may differ; the case name matches
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "e")]
    assert main([*args, "--class-names", "atrium"]) == 0
    out = capsys.readouterr().out
    assert "| atrium | 1.0000" in out


def test_predict_folder_of_dicom_series_folders(tmp_path, ckpt):
    img, _ = _itk_image()
    write_dicom_series(img, tmp_path / "study" / "t2_axial")
    write_dicom_series(img, tmp_path / "study" / "adc", uid="1.2.826.0.1.3680043.2.1125.1.44")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "study"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["adc.nii.gz", "t2_axial.nii.gz"]
    _assert_same_geometry(_geometry(out / "adc.nii.gz"), _geometry(tmp_path / "study" / "adc"))


def test_predict_multichannel_case_in_nrrd(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "mc.pt", in_channels=2, names=("T2", "ADC"), normalization="zscore,minmax")
    scans = tmp_path / "scans"
    for c in range(2):
        img, _ = _itk_image(np.float32, seed=c)
        scans.mkdir(exist_ok=True)
        sitk.WriteImage(img, str(scans / f"pat_{c:04d}.nrrd"))
    files = [str(scans / "pat_0001.nrrd"), str(scans / "pat_0000.nrrd")]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", *files, "--out", str(out), "--format", "input"]) == 0
    assert [p.name for p in out.iterdir()] == ["pat.nrrd"]
    _assert_same_geometry(_geometry(out / "pat.nrrd"), _geometry(scans / "pat_0000.nrrd"))
    # the same case through the library: channel 0 z-scored, channel 1 min-max (the checkpoint's schemes)
    vol = read_scan(sorted(scans.iterdir()), ["zscore", "minmax"])
    assert vol.case_id == "pat" and vol.image.shape == (2, 5, 10, 12)
    assert abs(float(vol.image[0].mean())) < 1e-4 and vol.image[1].min() == 0 and vol.image[1].max() == 1
    bad = sitk.Image([12, 10, 6], sitk.sitkFloat32)  # one slice more: not on the grid of channel 0
    sitk.WriteImage(bad, str(scans / "pat_0001.nrrd"))
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(scans), "--out", str(tmp_path / "p2")]) == 2
    assert "pat_0001.nrrd: grid" in " ".join(capsys.readouterr().err.split())
