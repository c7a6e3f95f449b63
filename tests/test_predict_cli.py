"""`arco predict`: NIfTI in -> label NIfTI out in the scan's own geometry; refusals before any work."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from arco.checkpoint import save_checkpoint
from arco.cli import main

# Oblique affine with anisotropic voxels (1.1 x 0.7 x 3.0 mm) and an offset.
_ROT = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = _ROT @ np.diag([1.1, 0.7, 3.0])
AFFINE[:3, 3] = [-20.0, 7.5, 102.0]


def _checkpoint(path, arch="unet", num_classes=3):
    from arco.models import MODELS

    torch.manual_seed(0)
    if arch == "unet":
        kwargs = {"in_channels": 1, "num_classes": num_classes}
        dims, patch = 2, [32, 32]
    else:
        kwargs = {"in_channels": 1, "num_classes": num_classes, "n_filters": 2}
        dims, patch = 3, [16, 16, 16]
    model = MODELS.build(arch, **kwargs)
    data = {
        "dataset": "phantom",
        "spatial_dims": dims,
        "num_classes": num_classes,
        "class_names": None,
        "patch_size": patch,
        "normalization": "zscore",
    }
    state = {"arch": arch, "kwargs": kwargs, "state_dict": model.state_dict()}
    save_checkpoint({"predictor": state, "data": data, "config": {}}, path)
    return path


def _scan(path, shape=(24, 20, 6), seed=0):
    img = np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(img, AFFINE), str(path))
    return path


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.mark.parametrize("arch", ["unet", "vnet"])
def test_predict_geometry_round_trip(tmp_path, unet_ckpt, arch, capsys):
    ckpt = unet_ckpt if arch == "unet" else _checkpoint(tmp_path / "vnet.pt", "vnet", 2)
    scans = tmp_path / "scans"
    scans.mkdir()
    _scan(scans / "p1.nii.gz")
    _scan(scans / "p2.nii", shape=(17, 30, 5), seed=1)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(scans), "--out", str(out)]) == 0
    assert "wrote 2 label file(s)" in capsys.readouterr().out
    for name in ("p1.nii.gz", "p2.nii"):
        src, dst = nib.load(str(scans / name)), nib.load(str(out / name))
        assert dst.shape == src.shape
        np.testing.assert_allclose(dst.affine, src.affine, atol=1e-5)
        np.testing.assert_allclose(dst.header.get_zooms(), src.header.get_zooms(), atol=1e-5)
        labels = np.asarray(dst.dataobj)
        assert np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() < 3


def test_predict_2d_scan(tmp_path, unet_ckpt):
    scan = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 24)).astype(np.float32), AFFINE), str(scan))
    assert main(["predict", "--checkpoint", str(unet_ckpt), "--input", str(scan), "--out", str(tmp_path / "o")]) == 0
    out = nib.load(str(tmp_path / "o" / "slice.nii.gz"))
    assert out.shape == (20, 24)
    np.testing.assert_allclose(out.affine, AFFINE, atol=1e-5)


def test_predict_matches_library_call(tmp_path, unet_ckpt):
    # The CLI's output equals predict_volume on the normalised (Z, Y, X) scan, transposed back.
    from arco.checkpoint import load_predictor
    from arco.data.io import read_scan
    from arco.evaluation import predict_volume

    scan = _scan(tmp_path / "s.nii.gz")
    assert main(["predict", "--checkpoint", str(unet_ckpt), "--input", str(scan), "--out", str(tmp_path / "o")]) == 0
    model, _ = load_predictor(unet_ckpt)
    expected = predict_volume(lambda x: model(x).logits, read_scan(scan, "zscore").image, 2, (32, 32))
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "o" / "s.nii.gz")).dataobj).T, expected)


def test_predict_refuses_to_overwrite(tmp_path, unet_ckpt, capsys):
    scan = _scan(tmp_path / "s.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "s.nii.gz").write_bytes(b"old")
    args = ["predict", "--checkpoint", str(unet_ckpt), "--input", str(scan), "--out", str(out)]
    assert main(args) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "outputs exist" in err and "s.nii.gz" in err and "--overwrite" in err
    assert (out / "s.nii.gz").read_bytes() == b"old"
    assert main([*args, "--overwrite"]) == 0
    assert nib.load(str(out / "s.nii.gz")).shape == (24, 20, 6)


def test_predict_in_place_needs_flag_and_suffix(tmp_path, unet_ckpt, capsys):
    scan = _scan(tmp_path / "s.nii.gz")
    before = scan.read_bytes()
    base = ["predict", "--checkpoint", str(unet_ckpt), "--input", str(tmp_path), "--out", str(tmp_path)]
    assert main(base) != 0
    assert "is an input folder" in " ".join(capsys.readouterr().err.split())
    assert main([*base, "--in-place-ok"]) != 0
    assert "would replace the input scan" in " ".join(capsys.readouterr().err.split())
    assert scan.read_bytes() == before
    assert main([*base, "--in-place-ok", "--suffix", "_seg"]) == 0
    assert nib.load(str(tmp_path / "s_seg.nii.gz")).shape == (24, 20, 6)


def _text_file(d):
    (d / "scan.txt").write_text("x")
    return d / "scan.txt"


def _corrupt_nifti(d):
    _scan(d / "good.nii.gz")
    (d / "bad.nii.gz").write_bytes(b"not a nifti")
    return d


@pytest.mark.parametrize(
    "make_input, match",
    [
        (_text_file, "scan.txt is not a supported image"),
        (lambda d: d / "missing.nii.gz", "does not exist"),
        (_corrupt_nifti, "bad.nii.gz: cannot read"),
    ],
)
def test_predict_bad_input(tmp_path, unet_ckpt, capsys, make_input, match):
    path = make_input(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(unet_ckpt), "--input", str(path), "--out", str(out)]) != 0
    assert match in " ".join(capsys.readouterr().err.split())
    assert not out.exists() or not list(out.iterdir())  # checked before any work: good.nii.gz not written


def test_predict_bad_checkpoint_and_out(tmp_path, capsys):
    scan = _scan(tmp_path / "s.nii.gz")
    args = [
        "predict",
        "--checkpoint",
        str(tmp_path / "nope"),
        "--input",
        str(scan),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) != 0
    assert "does not exist" in " ".join(capsys.readouterr().err.split())
    (tmp_path / "f").write_text("x")
    args = [
        "predict",
        "--checkpoint",
        str(tmp_path / "nope"),
        "--input",
        str(scan),
        "--out",
        str(tmp_path / "f"),
    ]
    assert main(args) != 0
    assert "not a folder" in " ".join(capsys.readouterr().err.split())
