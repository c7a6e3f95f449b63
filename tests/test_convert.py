"""`arco data convert acdc|la|msd` on small files made here in each download's official raw layout; the
outputs load with the `acdc`, `la` and `nnunet` loaders; refusals and errors name the file."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from arco._checks import DataError
from arco.cli import main
from arco.data import DataConfig, build_data
from arco.data.convert import convert_acdc, convert_la, convert_msd
from arco.data.convert.acdc import acdc_split, read_info_cfg, train_slice_rows
from arco.data.convert.la import la_split
from arco.data.convert.lists import ACDC_SLICE_ORDER, ACDC_TEST, ACDC_TRAIN, ACDC_VAL, LA_TEST, LA_TRAIN

AFFINE = np.diag([1.5, 1.4, 10.0, 1.0])


# ------------------------------------------------------------------------------------------------ ACDC
def make_acdc_raw(root: Path, patients=5, size=(20, 18)) -> Path:
    """Official ACDC layout: database/training/patientXXX/{Info.cfg, _4d, _frameYY, _frameYY_gt}."""
    rng = np.random.default_rng(0)
    for p in range(1, patients + 1):
        pid = f"patient{p:03d}"
        folder = root / "training" / pid
        folder.mkdir(parents=True)
        ed, es, depth = 1 + p % 2, 8 + p, 3 + p % 2
        (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: DCM\nHeight: 180.0\nNbFrame: 20\nWeight: 80\n")
        cine = rng.integers(0, 500, (*size, depth, 20)).astype(np.int16)
        nib.save(nib.Nifti1Image(cine, AFFINE), str(folder / f"{pid}_4d.nii.gz"))
        for f in (ed, es):
            gt = rng.integers(0, 4, (*size, depth)).astype(np.uint8)
            nib.save(nib.Nifti1Image(cine[..., f - 1], AFFINE), str(folder / f"{pid}_frame{f:02d}.nii.gz"))
            nib.save(nib.Nifti1Image(gt, AFFINE), str(folder / f"{pid}_frame{f:02d}_gt.nii.gz"))
    return root


def test_convert_acdc_layout_and_loader(tmp_path):
    raw = make_acdc_raw(tmp_path / "database")
    out = tmp_path / "ACDC"
    info = convert_acdc(raw, out)
    assert (info["train"], info["val"], info["test"]) == (3, 1, 1) and info["frames"] == 10
    train = (out / "train.list").read_text().split()
    assert len(train) == 6 and all(f.endswith(("_frame01", "_frame02")) for f in train)
    # patient002: ED is frame 01, ES frame 10 -> frame01 / frame02 (SSL4MIS naming); min-max per volume
    with h5py.File(out / "data" / "patient002_frame02.h5") as fh:
        image, label = fh["image"][()], fh["label"][()]
    src = np.asarray(nib.load(str(raw / "training" / "patient002" / "patient002_frame10.nii.gz")).dataobj).T
    np.testing.assert_allclose(image, (src - src.min()) / (src.max() - src.min()), atol=1e-6)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and image.shape == (3, 18, 20)  # (Z, Y, X)
    with h5py.File(out / "data" / "slices" / "patient002_frame02_slice_1.h5") as fh:  # 1-based: array slice 0
        np.testing.assert_array_equal(fh["image"][()], image[0])
    rows = (out / "train_slices.list").read_text().split()
    assert len(rows) == info["train_slices"] == sum(4 if int(f[7:10]) % 2 else 3 for f in train)
    assert {r.rsplit("_slice_", 1)[0] for r in rows} == set(train)
    assert json.loads((out / "conversion.json").read_text())["patients"]["patient002"]["ES"] == 10
    d = build_data(DataConfig(dataset="acdc", root=str(out), labeled="1", patch_size=(16, 16)))
    assert len(d.split["labeled"]) == 1 and len(d.val) == 2 and len(d.test) == 2
    assert d.val[0].image.min() >= 0 and d.val[0].image.max() <= 1


def test_convert_acdc_official_frame_names(tmp_path):
    raw = make_acdc_raw(tmp_path / "raw", patients=3)
    convert_acdc(raw, tmp_path / "out", frame_names="official")
    assert (tmp_path / "out" / "data" / "patient002_frame10.h5").is_file()


def test_acdc_standard_split_and_slice_order():
    standard = ACDC_TRAIN + ACDC_VAL + ACDC_TEST
    assert (len(ACDC_TRAIN), len(ACDC_VAL), len(ACDC_TEST)) == (70, 10, 20) and len(set(standard)) == 100
    parts = acdc_split([*standard, "patient101"])
    assert parts["train"][:3] == ["patient099", "patient038", "patient050"] and parts["extra"] == ["patient101"]
    frames = {p: [f"{p}_frame01", f"{p}_frame02"] for p in ACDC_TRAIN}
    slices = {f"{p}_frame0{i}": len(ACDC_SLICE_ORDER[f"{p}_frame0{i}"]) for p in ACDC_TRAIN for i in (1, 2)}
    rows = train_slice_rows(ACDC_TRAIN, frames, slices, standard=True)
    assert len(rows) == 1312  # SSL4MIS train_slices.list
    assert rows[:3] == ["patient099_frame01_slice_15", "patient099_frame01_slice_11", "patient099_frame01_slice_1"]
    assert {r.rsplit("_frame", 1)[0] for r in rows[:23]} == {"patient099"}  # "1 labeled patient" = 23 rows
    slices["patient099_frame01"] = 5  # a different slice count falls back to array order for that frame
    assert train_slice_rows(["patient099"], frames, slices, True)[:5] == [
        f"patient099_frame01_slice_{k}" for k in range(1, 6)
    ]
    other = acdc_split([f"patient{i:03d}" for i in range(1, 11)], seed=0)
    assert [len(other[k]) for k in ("train", "val", "test")] == [7, 1, 2] and "extra" not in other
    assert acdc_split([f"patient{i:03d}" for i in range(1, 11)], seed=0) == other  # deterministic


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda r: (r / "training/patient002/patient002_frame10_gt.nii.gz").unlink(),
            r"patient002_frame10_gt\.nii\.gz: not found",
        ),
        (
            lambda r: (r / "training/patient001/Info.cfg").write_text("ED: 2\nGroup: NOR\n"),
            r"patient001/Info\.cfg: no ES",
        ),
        (lambda r: (r / "training/patient001/Info.cfg").write_text("ED: 2\nES: x\n"), r"Info\.cfg: ES is 'x'"),
        (
            lambda r: (r / "training/patient003/patient003_frame02.nii.gz").write_bytes(b"junk"),
            r"patient003_frame02\.nii\.gz: cannot read",
        ),
    ],
)
def test_convert_acdc_bad_input_names_the_file(tmp_path, damage, match):
    raw = make_acdc_raw(tmp_path / "raw", patients=3)
    damage(raw)
    with pytest.raises(DataError, match=match):
        convert_acdc(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_read_info_cfg(tmp_path):
    (tmp_path / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    assert read_info_cfg(tmp_path / "Info.cfg") == {
        "ED": 1, "ES": 12, "Group": "DCM", "Height": 184.0, "NbFrame": 30, "Weight": 95.0
    }  # fmt: skip


def test_convert_never_overwrites(tmp_path, capsys):
    raw = make_acdc_raw(tmp_path / "raw", patients=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["data", "convert", "acdc", str(raw), "--out", str(out)]
    assert main(args) == 2
    assert "not empty" in " ".join(capsys.readouterr().err.split()) and (out / "keep.txt").read_text() == "mine"
    assert main([*args, "--overwrite"]) == 0
    assert "arco train --config acdc --set data.root=" in capsys.readouterr().out and not (out / "keep.txt").exists()
    assert main(["data", "convert", "acdc", str(raw), "--out", str(raw / "training")]) == 2
    assert "overlaps the input" in " ".join(capsys.readouterr().err.split())
    assert (raw / "training" / "patient001" / "Info.cfg").is_file()


# -------------------------------------------------------------------------------------------------- LA
def make_la_raw(root: Path, cases=("CASEA", "CASEB", "CASEC"), shape=(150, 140, 8)) -> Path:
    """2018 LA challenge layout: <case>/lgemri.nrrd (uint8) + laendo.nrrd (0/255), NRRD axes (X, Y, Z)."""
    rng = np.random.default_rng(1)
    for i, case in enumerate(cases):
        label = np.zeros(shape, np.uint8)
        label[60 + i : 90 + i, 50:80, 2:6] = 255
        image = (rng.integers(0, 60, shape) + (label > 0) * 120).astype(np.uint8)
        (root / case).mkdir(parents=True)
        for name, arr in (("lgemri.nrrd", image), ("laendo.nrrd", label)):
            img = sitk.GetImageFromArray(arr.T)  # sitk takes (Z, Y, X)
            img.SetSpacing((0.625, 0.625, 2.5))
            sitk.WriteImage(img, str(root / case / name))
    return root


def test_convert_la_uamt_preprocessing_and_loader(tmp_path):
    raw = make_la_raw(tmp_path / "Training Set")
    out = tmp_path / "LA"
    info = convert_la(raw, out)
    assert (out / "train.list").read_text().split() and len((out / "test.list").read_text().split()) == 1
    for case, meta in info["cases"].items():
        (x0, x1), (y0, y1), (z0, z1) = meta["crop_xyz"]
        src = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / case / "lgemri.nrrd"))).T.astype(np.float64)
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / case / "laendo.nrrd"))).T == 255
        nz = np.nonzero(lab)
        # UA-MT: pad to 112 + margins of 10..19 per side in X and Y; Z uncropped
        lo_x, hi_x = (
            nz[0].min() - (112 - (nz[0].max() - nz[0].min())) // 2,
            nz[0].max() + (112 - (nz[0].max() - nz[0].min())) // 2,
        )
        assert lo_x - 19 <= x0 <= lo_x - 10 and hi_x + 10 <= x1 <= hi_x + 19 and (z0, z1) == (0, 8)
        assert 0 <= y0 and y1 <= 140
        with h5py.File(out / "2018LA_Seg_Training Set" / case / "mri_norm2.h5") as fh:
            image, label = fh["image"][()], fh["label"][()]
        expected = ((src - src.mean()) / src.std())[x0:x1, y0:y1]  # z-scored over the whole volume
        np.testing.assert_allclose(image, expected, atol=1e-5)
        np.testing.assert_array_equal(label, lab[x0:x1, y0:y1])
        assert label.dtype == np.uint8 and image.dtype == np.float32
    d = build_data(DataConfig(dataset="la", root=str(out), labeled="1", patch_size=(8, 16, 16)))
    assert d.test[0].image.shape[0] == 8  # (Z, Y, X): Z whole


def test_convert_la_deterministic_and_standard_split(tmp_path):
    raw = make_la_raw(tmp_path / "raw", cases=("A1", "B2"), shape=(100, 90, 4))
    a = convert_la(raw, tmp_path / "a")
    b = convert_la(raw, tmp_path / "b")
    assert a["cases"] == {k: {**v} for k, v in b["cases"].items()}  # seeded margins
    parts = la_split(LA_TRAIN + LA_TEST)
    assert parts["train"] == LA_TRAIN and parts["test"][0] == "UPT6DX9IQY9JAZ7HJKA7" and len(parts["test"]) == 20


def test_convert_la_bad_label(tmp_path):
    raw = make_la_raw(tmp_path / "raw", cases=("A1",), shape=(30, 30, 4))
    img = sitk.GetImageFromArray(np.full((4, 30, 30), 7, np.uint8))
    sitk.WriteImage(img, str(raw / "A1" / "laendo.nrrd"))
    with pytest.raises(DataError, match=r"A1/laendo\.nrrd: label values \[7\]"):
        convert_la(raw, tmp_path / "out")
    (raw / "A1" / "laendo.nrrd").unlink()
    with pytest.raises(DataError, match=r"A1/laendo\.nrrd: not found"):
        convert_la(raw, tmp_path / "out")


# ------------------------------------------------------------------------------------------------- MSD
def make_msd_task(root: Path, cases=4, modalities=("T2", "ADC")) -> Path:
    """MSD layout: dataset.json (modality, labels {"0": ...}, training, test), 4D imagesTr, labelsTr, imagesTs."""
    rng = np.random.default_rng(2)
    task = root / "Task05_Prostate"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    training = []
    shape = (16, 14, 5)
    for i in range(cases + 1):
        name = f"prostate_{i:02d}.nii.gz"
        img = rng.normal(100, 10, (*shape, len(modalities))).astype(np.float32)
        if len(modalities) == 1:
            img = img[..., 0]
        sub = "imagesTs" if i == cases else "imagesTr"
        nib.save(nib.Nifti1Image(img, AFFINE), str(task / sub / name))
        if i < cases:
            nib.save(nib.Nifti1Image(rng.integers(0, 3, shape).astype(np.uint8), AFFINE), str(task / "labelsTr" / name))
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (task / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"macOS resource fork")  # as in the MSD tars
    meta = {
        "name": "PROSTATE",
        "licence": "CC-BY-SA 4.0",
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": cases,
        "numTest": 1,
        "training": training,
        "test": [f"./imagesTs/prostate_{cases:02d}.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def test_convert_msd_to_nnunet_v2(tmp_path):
    task = make_msd_task(tmp_path)
    out = tmp_path / "Dataset005_Prostate"
    info = convert_msd(task, out)
    assert info == {
        "source": str(task.resolve()),
        "name": "Dataset005_Prostate",
        "training": 4,
        "test": 1,
        "channels": 2,
    }
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2", "1": "ADC"} and meta["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
    assert meta["numTraining"] == 4 and meta["file_ending"] == ".nii.gz" and meta["licence"] == "CC-BY-SA 4.0"
    src = nib.load(str(task / "imagesTr" / "prostate_01.nii.gz"))
    for c in range(2):
        ch = nib.load(str(out / "imagesTr" / f"prostate_01_{c:04d}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(ch.dataobj), np.asarray(src.dataobj)[..., c])
        np.testing.assert_allclose(ch.affine, src.affine)
        assert ch.header.get_zooms() == src.header.get_zooms()[:3]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        "prostate_04_0000.nii.gz",
        "prostate_04_0001.nii.gz",
    ]
    d = build_data(DataConfig(dataset="nnunet", root=str(out), labeled="1", patch_size=(4, 8, 8)))
    assert d.in_channels == 2 and d.channel_names == ("T2", "ADC") and d.labeled[0]["image"].shape == (2, 4, 8, 8)


def test_convert_msd_errors(tmp_path, capsys):
    task = make_msd_task(tmp_path, modalities=("T2", "ADC"))
    meta = json.loads((task / "dataset.json").read_text())
    meta["modality"] = {"0": "T2", "1": "ADC", "2": "DWI"}
    (task / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(
        DataError, match=r"prostate_00\.nii\.gz: shape \(16, 14, 5, 2\) holds 2 modalities but dataset.json lists 3"
    ):
        convert_msd(task, tmp_path / "o")
    meta["modality"] = {"0": "T2", "1": "ADC"}
    meta["training"][1]["label"] = "./labelsTr/missing.nii.gz"
    (task / "dataset.json").write_text(json.dumps(meta))
    assert main(["data", "convert", "msd", str(task), "--out", str(tmp_path / "o")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "names label './labelsTr/missing.nii.gz'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
