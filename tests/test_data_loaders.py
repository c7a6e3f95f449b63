"""Every loader on tiny files made here (ACDC/SSL4MIS h5, LA/UA-MT h5, nnU-Net NIfTI, presets, MNI152), and
every
bad input giving a DataError that names the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from arco._checks import ConfigError, DataError
from arco.data import DATASETS, DataConfig, SegmentationData, Volume, build_data, inspect_dataset


def _h5(path: Path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        for k, v in arrays.items():
            fh.create_dataset(k, data=v)


def make_acdc(root: Path, patients=5, slices=3, size=24) -> Path:
    """ACDC SSL4MIS layout: patient p has frames 01/02 with `slices` slices each; last 2 patients are
    val/test."""
    rng = np.random.default_rng(0)
    rows, train, vols = [], [], []
    for p in range(1, patients + 1):
        for f in (1, 2):
            case = f"patient{p:03d}_frame{f:02d}"
            lab = rng.integers(0, 4, (slices, size, size)).astype(np.uint8)
            img = (lab / 3 + 0.1 * rng.random(lab.shape)).astype(np.float32) / 1.1
            _h5(root / "data" / f"{case}.h5", image=img, label=lab)
            if p <= patients - 2:
                train.append(case)
                for k in range(slices):
                    rows.append(f"{case}_slice_{k}")
                    _h5(root / "data" / "slices" / f"{case}_slice_{k}.h5", image=img[k], label=lab[k])
            else:
                vols.append(case)
    (root / "train_slices.list").write_text("\n".join(rows) + "\n")
    (root / "train.list").write_text("\n".join(train) + "\n")
    (root / "val.list").write_text(vols[0] + "\n" + vols[1] + "\n")
    (root / "test.list").write_text("\n".join(vols[2:]) + "\n")
    return root


def make_la(root: Path, cases=6, subdir="") -> Path:
    rng = np.random.default_rng(1)
    names = [f"LA{i:02d}" for i in range(cases)]
    for n in names:
        lab = np.zeros((20, 18, 12), np.uint8)  # stored (X, Y, Z)
        lab[5:12, 4:10, 3:8] = 1
        img = (lab + 0.1 * rng.standard_normal(lab.shape)).astype(np.float32)
        _h5(root / subdir / n / "mri_norm2.h5", image=img, label=lab)
    (root / "train.list").write_text("\n".join(names[:-2]) + "\n")
    (root / "test.list").write_text("\n".join(names[-2:]) + "\n")
    return root


def _nii(path: Path, arr: np.ndarray, affine=None, zooms=(1.5, 0.8, 0.8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([*zooms, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(arr, aff)
    img.header.set_zooms(zooms[: arr.ndim])
    nib.save(img, str(path))


def make_nnunet(root: Path, cases=6, labels=None, shape=(16, 14, 5), hu=False, ts=False) -> Path:
    labels = labels or {"background": 0, "organ": 1, "lesion": 2}
    rng = np.random.default_rng(2)
    for i in range(cases):
        lab = rng.integers(0, len(labels), shape).astype(np.uint8)  # nibabel order (X, Y, Z)
        img = (lab * 100.0 - (300 if hu else 0) + rng.standard_normal(shape)).astype(np.float32)
        folder = "Ts" if ts and i >= cases - 2 else "Tr"
        _nii(root / f"images{folder}" / f"case_{i:03d}_0000.nii.gz", img)
        _nii(root / f"labels{folder}" / f"case_{i:03d}.nii.gz", lab)
    n_tr = cases - 2 if ts else cases
    meta = {
        "channel_names": {"0": "CT" if hu else "MRI"},
        "labels": labels,
        "numTraining": n_tr,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _check_contract(d: SegmentationData, dims: int, patch):
    assert d.spatial_dims == dims and d.patch_size == tuple(patch) and len(d.class_names) == d.num_classes
    item = d.labeled[0]
    assert item["image"].shape == (1, *patch) and str(item["image"].dtype) == "torch.float32"
    assert item["label"].shape == tuple(patch) and str(item["label"].dtype) == "torch.int64"
    assert int(item["label"].max()) < d.num_classes
    if len(d.unlabeled):
        assert set(d.unlabeled[0]) <= {"image", "position"} and d.unlabeled[0]["image"].shape == (1, *patch)
        if dims == 2:  # 2D slices named <case>_slice_<k> carry their place in the volume (GCL's partitions)
            assert 0.0 <= float(d.unlabeled[0]["position"]) < 1.0 and 0.0 <= float(item["position"]) < 1.0
    for v in d.val + d.test:
        assert isinstance(v, Volume) and v.image.dtype == np.float32 and v.label.dtype == np.int64
        assert v.image.shape == v.label.shape and v.image.ndim == 3
    json.dumps(d.split)
    assert not set(d.split["labeled"]) & set(d.split["unlabeled"])
    assert not set(d.split["val"]) & set(d.split["test"])


def test_registry_names():
    assert set(DATASETS.names()) == {
        "phantom2d",
        "phantom3d",
        "acdc",
        "la",
        "nnunet",
        "lits",
        "mmwhs",
        "mni152",
        "phantom_mp",
        "preprocessed",
    }
    with pytest.raises(ValueError, match="did you mean 'acdc'"):
        build_data(DataConfig(dataset="acdx", root="x"))


def test_acdc_patients_rule(tmp_path):
    root = make_acdc(tmp_path / "acdc")
    d = build_data(DataConfig(dataset="acdc", root=str(root), labeled="1", patch_size=(32, 32), augment=False))
    _check_contract(d, 2, (32, 32))
    assert d.split["labeled"] == ["patient001"] and d.split["unlabeled"] == ["patient002", "patient003"]
    assert len(d.labeled) == 6 and len(d.unlabeled) == 12  # both frames of a patient, never a slice split
    assert [v.case_id for v in d.val] == ["patient004_frame01", "patient004_frame02"]
    assert d.normalization == "none" and d.val[0].spacing is None


def test_acdc_ssl4mis_rule_and_fraction(tmp_path):
    root = make_acdc(tmp_path / "acdc")
    d = build_data(DataConfig(dataset="acdc", root=str(root), labeled="2", split_rule="ssl4mis", patch_size=(24, 24)))
    assert len(d.labeled) == 12 and d.split["labeled"] == ["patient001", "patient002"]
    d = build_data(DataConfig(dataset="acdc", root=str(root), labeled="0.5", patch_size=(24, 24)))
    assert d.split["labeled"] == ["patient001", "patient002"]  # round(1.5) half up
    with pytest.raises(ConfigError, match="patient count"):
        build_data(DataConfig(dataset="acdc", root=str(root), labeled="0.5", split_rule="ssl4mis"))


@pytest.mark.parametrize("subdir", ["", "2018LA_Seg_Training Set"])
def test_la_layout(tmp_path, subdir):
    root = make_la(tmp_path / "la", subdir=subdir)
    d = build_data(DataConfig(dataset="la", root=str(root), labeled="1", patch_size=(8, 16, 16)))
    _check_contract(d, 3, (8, 16, 16))
    assert d.split["labeled"] == ["LA00"] and [v.case_id for v in d.val] == ["LA03"]  # val from train, not test
    assert [v.case_id for v in d.test] == ["LA04", "LA05"]
    assert d.test[0].image.shape == (12, 18, 20)  # (Z, Y, X)


def test_nnunet_3d_and_2d(tmp_path):
    root = make_nnunet(tmp_path / "nn", cases=10)
    d = build_data(DataConfig(dataset="nnunet", root=str(root), labeled="2", patch_size=(4, 8, 8)))
    _check_contract(d, 3, (4, 8, 8))
    assert len(d.test) == 2 and len(d.val) == 1 and len(d.split["labeled"]) == 2
    v = d.test[0]
    assert v.image.shape == (5, 14, 16) and v.spacing == (0.8, 0.8, 1.5) and v.affine.shape == (4, 4)
    assert abs(float(v.image.mean())) < 1e-4  # z-scored by default
    d2 = build_data(DataConfig(dataset="nnunet", root=str(root), labeled="2", spatial_dims=2, patch_size=(16, 16)))
    _check_contract(d2, 2, (16, 16))
    assert len(d2.labeled) == 10  # 2 cases x 5 slices
    assert d2.split["test"] == d.split["test"]  # split does not depend on the dimensionality


def test_nnunet_imagests_with_labels_is_test(tmp_path):
    root = make_nnunet(tmp_path / "nn", cases=6, ts=True)
    d = build_data(DataConfig(dataset="nnunet", root=str(root), labeled="all", patch_size=(4, 8, 8)))
    assert d.split["test"] == ["case_004", "case_005"] and d.split["test_from"] == "imagesTs"


def test_lits_preset_ct_window(tmp_path):
    root = make_nnunet(tmp_path / "lits", cases=5, labels={"background": 0, "liver": 1, "tumour": 2}, hu=True)
    d = build_data(DataConfig(dataset="lits", root=str(root), labeled="1", patch_size=(16, 16)))
    _check_contract(d, 2, (16, 16))
    assert d.normalization == "ct"
    img = d.test[0].image
    assert img.min() >= 0 and img.max() <= 1
    assert np.isclose(img.min(), 0.0)  # -300 HU clipped to the -200 window edge
    with pytest.raises(DataError, match="expects 8"):
        build_data(DataConfig(dataset="mmwhs", root=str(root)))


def test_mni152():
    pytest.importorskip("nilearn")
    d = build_data(DataConfig(dataset="mni152", labeled="1", augment=False))
    _check_contract(d, 2, (128, 128))
    assert d.class_names == ("background", "CSF", "GM", "WM")
    counts = np.bincount(d.val[2].label.ravel(), minlength=4)
    assert (counts[1:] > 100).all()
    z = lambda c: tuple(int(s) for s in c.split("z")[1].split("-"))  # noqa: E731
    blocks = [z(c) for part in ("labeled", "unlabeled", "val", "test") for c in d.split[part]]
    for a, b in blocks:  # contiguous blocks, disjoint with gaps
        assert not any(a2 <= b + 1 and a <= b2 + 1 for a2, b2 in blocks if (a2, b2) != (a, b))


def test_inspect(tmp_path):
    root = make_acdc(tmp_path / "acdc")
    info = inspect_dataset(root, labeled="1")
    assert info["layout"] == "acdc" and info["cases"] == {"train": 3, "val": 2, "test": 2}
    assert info["train_items"] == 18 and abs(sum(info["class_percent"]) - 100) < 0.1
    assert info["split"]["labeled"] == ["patient001"]
    nn = inspect_dataset(make_nnunet(tmp_path / "nn", cases=5), labeled="0.5")
    assert nn["layout"] == "nnunet" and nn["spacings"] == [[0.8, 0.8, 1.5]]
    assert inspect_dataset(make_la(tmp_path / "la"), labeled="all")["layout"] == "la"


def test_cli_inspect(tmp_path, capsys):
    from arco.cli import main

    root = make_acdc(tmp_path / "acdc")
    assert main(["data", "inspect", str(root), "--labeled", "2"]) == 0
    out = capsys.readouterr().out
    assert "RV" in out and "2 labeled" in out
    assert main(["data", "inspect", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == "acdc"


def test_cli_inspect_missing_subprocess():
    r = subprocess.run(
        [sys.executable, "-m", "arco", "data", "inspect", "/missing/dataset"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and "/missing/dataset" in r.stderr


# ----------------------------------------------------------------------------------------------- bad inputs
def _acdc_cfg(root, **kw):
    return DataConfig(dataset="acdc", root=str(root), patch_size=(24, 24), **kw)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_data(_acdc_cfg(tmp_path / "nope"))


def test_missing_list_file(tmp_path):
    root = make_acdc(tmp_path / "a")
    (root / "val.list").unlink()
    with pytest.raises(DataError, match=r"val\.list: list file not found"):
        build_data(_acdc_cfg(root))


def test_list_names_missing_case(tmp_path):
    root = make_acdc(tmp_path / "a")
    (root / "test.list").write_text("patient099_frame01\n")
    with pytest.raises(DataError, match=r"test\.list names case 'patient099_frame01'"):
        build_data(_acdc_cfg(root))
    root = make_la(tmp_path / "la")
    (root / "train.list").write_text("LA00\nghost\n")
    with pytest.raises(DataError, match=r"train\.list names case 'ghost'"):
        build_data(DataConfig(dataset="la", root=str(root)))


def test_corrupt_h5(tmp_path):
    root = make_acdc(tmp_path / "a")
    bad = root / "data" / "slices" / "patient001_frame01_slice_0.h5"
    bad.write_bytes(b"not an h5 file")
    with pytest.raises(DataError, match=r"patient001_frame01_slice_0\.h5: cannot read h5"):
        build_data(_acdc_cfg(root))
    _h5(bad, image=np.zeros((24, 24), np.float32))
    with pytest.raises(DataError, match=r"slice_0\.h5: missing key\(s\) \['label'\]"):
        build_data(_acdc_cfg(root))


def test_corrupt_nifti(tmp_path):
    root = make_nnunet(tmp_path / "nn", cases=4)
    bad = root / "imagesTr" / "case_001_0000.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"case_001_0000\.nii\.gz: cannot read NIfTI"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))


def test_shape_mismatch(tmp_path):
    root = make_acdc(tmp_path / "a")
    _h5(
        root / "data/slices/patient002_frame01_slice_1.h5",
        image=np.zeros((24, 24), np.float32),
        label=np.zeros((20, 24), np.uint8),
    )
    with pytest.raises(DataError, match=r"slice_1\.h5: label shape \(20, 24\) does not match image shape"):
        build_data(_acdc_cfg(root))


def test_affine_mismatch(tmp_path):
    root = make_nnunet(tmp_path / "nn", cases=4)
    lab = root / "labelsTr" / "case_002.nii.gz"
    _nii(lab, np.zeros((16, 14, 5), np.uint8), affine=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(DataError, match=r"case_002\.nii\.gz: affine differs"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))


def test_labels_out_of_range(tmp_path):
    root = make_nnunet(tmp_path / "nn", cases=4)
    _nii(root / "labelsTr" / "case_003.nii.gz", np.full((16, 14, 5), 7, np.uint8))
    with pytest.raises(DataError, match=r"case_003\.nii\.gz: label values 7\.\.7 are outside 0\.\.2"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))


def test_nan_intensities(tmp_path):
    root = make_la(tmp_path / "la")
    img = np.zeros((20, 18, 12), np.float32)
    img[0, 0, 0] = np.nan
    _h5(root / "LA01" / "mri_norm2.h5", image=img, label=np.zeros_like(img, dtype=np.uint8))
    with pytest.raises(DataError, match=r"LA01/mri_norm2\.h5: image has 1 NaN/inf"):
        build_data(DataConfig(dataset="la", root=str(root)))


def test_dims_mismatch(tmp_path):
    root = make_acdc(tmp_path / "a")
    with pytest.raises(DataError, match="is 2D but data.spatial_dims=3"):
        build_data(_acdc_cfg(root, spatial_dims=3))
    _h5(
        root / "data/slices/patient001_frame01_slice_0.h5",
        image=np.zeros((2, 24, 24), np.float32),
        label=np.zeros((2, 24, 24), np.uint8),
    )
    with pytest.raises(DataError, match=r"slice_0\.h5: expected a 2D image"):
        build_data(_acdc_cfg(root))


def test_empty_and_too_many_labeled(tmp_path):
    root = make_acdc(tmp_path / "a")
    with pytest.raises(ConfigError, match="empty labeled set"):  # rejected when the config is read
        _acdc_cfg(root, labeled="0")
    with pytest.raises(DataError, match=r"data.labeled=5 but only 3 training patients exist in .*train_slices"):
        build_data(_acdc_cfg(root, labeled="5"))
    with pytest.raises(ConfigError, match="num_classes=3 but dataset 'acdc' has 4"):
        build_data(_acdc_cfg(root, num_classes=3))


def test_dataset_json_inconsistent(tmp_path):
    root = make_nnunet(tmp_path / "nn", cases=4)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 9}))
    with pytest.raises(DataError, match=r"dataset\.json: numTraining=9 but imagesTr has 4"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "x": 2}}))
    with pytest.raises(DataError, match=r"dataset\.json: label values \[0, 2\]"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "imagesTr" / "case_000_0000.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr: label\(s\) \['case_000'\] have no image"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_001_0000\.nii\.gz: no label"):
        build_data(DataConfig(dataset="nnunet", root=str(root)))


def test_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="unknown layout"):
        inspect_dataset(tmp_path)
