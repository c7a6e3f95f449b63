"""Bad input to the verbs that read scans and write outputs (predict, evaluate, data export/convert/preprocess/
inspect/phantom, demo): each gives a non-zero exit and one paragraph naming the file, changes no input, and leaves
``--out`` exactly as it was (issue 21). Config-shaped inputs are in test_bad_input_config.py.

The first block is the issue's table: each of those rows passed silently, half-wrote ``--out`` or named no file
before."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from _bad import Bad, check_bad, cut, dicom_series, digest
from arco.checkpoint import save_checkpoint
from arco.cli import main
from arco.data.phantom import generate_phantom2d
from test_convert import make_msd_task
from test_data_loaders import make_nnunet

AFFINE = np.diag([1.2, 0.8, 3.0, 1.0])
PHANTOM = {"dataset": "phantom2d", "subjects": 5, "image_size": 32, "labeled": "1", "patch_size": [32, 32]}


def _checkpoint(path: Path, phantom: Path) -> Path:
    from arco.models import MODELS

    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 4}
    model = MODELS.build("unet", **kwargs)
    data = {"dataset": "phantom2d", "spatial_dims": 2, "num_classes": 4, "class_names": None,
            "patch_size": [32, 32], "normalization": "zscore"}  # fmt: skip
    state = {"arch": "unet", "kwargs": kwargs, "state_dict": model.state_dict()}
    save_checkpoint({"predictor": state, "data": data, "config": {"data": {**PHANTOM, "root": str(phantom)}}}, path)
    return path


def scan(path: Path, shape=(24, 20, 6), seed=0, dtype=np.float32, values=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).normal(100, 20, size=shape).astype(dtype) if values is None else values
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))
    return path


def label(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, AFFINE), str(path))
    return path


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("kit")
    generate_phantom2d(root / "p2d", subjects=5, seed=0, size=32)
    ckpt = _checkpoint(root / "run" / "checkpoints" / "best.pt", root / "p2d")
    return SimpleNamespace(root=root, phantom=root / "p2d", run=root / "run", ckpt=ckpt)


def predict(kit, inputs, out, *extra) -> list[str]:
    return ["predict", "--checkpoint", str(kit.ckpt), "--input", *map(str, inputs), "--out", str(out), *extra]


def kept_out(tmp: Path) -> Path:
    """An output folder that already holds a file: a failure must leave it exactly so."""
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("earlier results")
    return tmp / "out"


def pred_gt(tmp: Path, n=3) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    for i in range(n):
        lab = rng.integers(0, 3, (12, 10, 4)).astype(np.uint8)
        label(tmp / "pred" / f"c{i}.nii.gz", lab)
        label(tmp / "gt" / f"c{i}.nii.gz", lab)
    return tmp / "pred", tmp / "gt"


# ------------------------------------------------------------------------------------------- the table
def t_dicom_slice_cut_in_half(tmp, kit):
    series = dicom_series(tmp / "series")
    cut(series / "slice001.dcm")
    return Bad(predict(kit, [series], tmp / "out"), r"slice001\.dcm.*slice\(s\) missing", [series], tmp / "out")


def t_predict_folder_last_scan_cut_off(tmp, kit):
    for name in ("a", "b"):
        scan(tmp / "scans" / f"{name}.nii.gz")
    cut(scan(tmp / "scans" / "z.nii.gz", seed=3), 0.6)  # header intact, voxel data cut off
    out = kept_out(tmp)
    return Bad(predict(kit, [tmp / "scans"], out), r"z\.nii\.gz: cannot read", [tmp / "scans"], out)


def t_evaluate_mistyped_data_root(tmp, kit):
    return Bad(
        ["evaluate", "--checkpoint", str(kit.run), "--data-root", str(tmp / "p2d_typo"), "--out", str(tmp / "ev")],
        r"--data-root \S*p2d_typo does not exist",
        [kit.run],
        tmp / "p2d_typo",  # never generated
    )


def t_export_out_is_a_file(tmp, kit):
    (tmp / "file").write_text("x")
    return Bad(["data", "export", str(kit.phantom), "--out", str(tmp / "file")], r"--out \S*file is a file, not a "
               "folder", [kit.phantom, tmp / "file"])  # fmt: skip


def t_demo_out_is_a_file(tmp, kit):
    (tmp / "file").write_text("x")
    return Bad(["demo", "--out", str(tmp / "file")], r"--out \S*file is a file, not a folder", [tmp / "file"])


def t_symlink_loop_in_images_tr(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    os.symlink("loop_b_0000.nii.gz", root / "imagesTr" / "loop_a_0000.nii.gz")
    os.symlink("loop_a_0000.nii.gz", root / "imagesTr" / "loop_b_0000.nii.gz")
    return Bad(["data", "inspect", str(root)], r"loop_a_0000\.nii\.gz is a symlink loop", [root])


def t_dataset_json_num_training_six(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": "six"}))
    return Bad(
        ["data", "inspect", str(root)], r"dataset\.json: key 'numTraining' must be a whole number.*'?six", [root]
    )


# ------------------------------------------------------------------------------------------------ DICOM series
def t_dicom_missing_slice(tmp, kit):
    series = dicom_series(tmp / "series", zs=(0.0, 2.5, 7.5, 10.0))
    return Bad(predict(kit, [series], tmp / "out"), r"1 slice\(s\) missing between slice001\.dcm \(slice 2 of 4, at "
               r"2\.5 mm\)", [series], tmp / "out")  # fmt: skip


def t_dicom_uneven_spacing(tmp, kit):
    series = dicom_series(tmp / "series", zs=(0.0, 2.5, 5.0, 8.7))
    return Bad(predict(kit, [series], tmp / "out"), r"unevenly spaced slices between slice002\.dcm .* 3\.7 mm apart",
               [series], tmp / "out")  # fmt: skip


def t_dicom_duplicated_slice(tmp, kit):
    series = dicom_series(tmp / "series")
    shutil.copyfile(series / "slice002.dcm", series / "slice002_copy.dcm")
    return Bad(predict(kit, [series], tmp / "out"), r"slice002(_copy)?\.dcm: the same DICOM slice", [series])


def t_dicom_two_slices_one_position(tmp, kit):
    series = dicom_series(tmp / "series", zs=(0.0, 2.5, 2.5, 5.0))
    return Bad(predict(kit, [series], tmp / "out"), r"slice00[12]\.dcm: lies at the same position", [series])


def t_dicom_mixed_orientation(tmp, kit):
    series = dicom_series(tmp / "series", orient={3: "1\\0\\0\\0\\0\\1"})
    return Bad(predict(kit, [series], tmp / "out"), r"slice003\.dcm: slice orientation .* differs", [series])


def t_dicom_foreign_file(tmp, kit):
    series = dicom_series(tmp / "series")
    (series / "notes.txt").write_text("scanned on Tuesday")
    return Bad(predict(kit, [series], tmp / "out"), r"notes\.txt: not a readable slice of the DICOM series", [series])


def t_dicom_two_series(tmp, kit):
    series = dicom_series(tmp / "series")
    dicom_series(tmp / "other", uid="1.2.826.0.1.3680043.2.1125.9.8")
    for f in (tmp / "other").iterdir():
        shutil.move(f, series / f"b_{f.name}")
    return Bad(predict(kit, [series], tmp / "out"), r"series: holds 2 DICOM series", [series])


# ------------------------------------------------------------------------------------------------ predict
def t_predict_nan_voxels(tmp, kit):
    arr = np.random.default_rng(0).normal(size=(24, 20, 6)).astype(np.float32)
    arr[3, 4, 2] = np.nan
    s = scan(tmp / "nan.nii.gz", values=arr)
    return Bad(predict(kit, [s], tmp / "out"), r"nan\.nii\.gz: image has 1 NaN/inf", [s], tmp / "out")


def t_predict_inf_voxels_last(tmp, kit):
    scan(tmp / "in" / "a.nii.gz")
    arr = np.ones((24, 20, 6), np.float32)
    arr[0, 0, 0] = np.inf
    scan(tmp / "in" / "b.nii.gz", values=arr)
    out = kept_out(tmp)
    return Bad(predict(kit, [tmp / "in"], out), r"b\.nii\.gz: image has 1 NaN/inf", [tmp / "in"], out)


def t_predict_complex_voxels(tmp, kit):
    s = scan(tmp / "c.nii.gz", values=np.ones((8, 8, 3), np.complex64))
    return Bad(predict(kit, [s], tmp / "out"), r"c\.nii\.gz: image has voxel type complex64", [s], tmp / "out")


def t_predict_4d_scan(tmp, kit):
    s = scan(tmp / "four.nii.gz", shape=(12, 10, 4, 2))
    return Bad(predict(kit, [s], tmp / "out"), r"four\.nii\.gz: expected a 3D image, got shape", [s], tmp / "out")


def t_predict_nrrd_cut_off(tmp, kit):
    import SimpleITK as sitk

    path = tmp / "s.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 20, 24), np.float32)), str(path), False)
    cut(path, 0.7)
    return Bad(predict(kit, [path], tmp / "out"), r"s\.nrrd: cannot read the image", [path], tmp / "out")


def t_predict_mha_cut_off(tmp, kit):
    import SimpleITK as sitk

    path = tmp / "s.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 20, 24), np.float32)), str(path), False)
    cut(path, 0.7)
    return Bad(predict(kit, [path], tmp / "out"), r"s\.mha: cannot read the image \(the voxel data is damaged or cut "
               "off", [path], tmp / "out")  # fmt: skip


def t_predict_missing_input(tmp, kit):
    return Bad(predict(kit, [tmp / "nope.nii.gz"], tmp / "out"), r"nope\.nii\.gz does not exist", [], tmp / "out")


def t_predict_input_symlink_loop(tmp, kit):
    os.symlink("loop.nii.gz", tmp / "loop.nii.gz")
    return Bad(
        predict(kit, [tmp / "loop.nii.gz"], tmp / "out"), r"loop\.nii\.gz is a symlink loop", [tmp / "loop.nii.gz"]
    )


def t_predict_input_broken_link(tmp, kit):
    os.symlink(tmp / "gone.nii.gz", tmp / "link.nii.gz")
    return Bad(predict(kit, [tmp / "link.nii.gz"], tmp / "out"), r"link\.nii\.gz is a broken symlink to \S*gone",
               [tmp / "link.nii.gz"], tmp / "out")  # fmt: skip


def t_predict_folder_with_a_text_file(tmp, kit):
    scan(tmp / "in" / "a.nii.gz")
    (tmp / "in" / "readme.txt").write_text("x")
    return Bad(predict(kit, [tmp / "in"], tmp / "out"), r"readme\.txt", [tmp / "in"], tmp / "out")


def t_predict_empty_folder(tmp, kit):
    (tmp / "in").mkdir()
    return Bad(predict(kit, [tmp / "in"], tmp / "out"), r"folder \S*in holds no images", [tmp / "in"], tmp / "out")


def t_predict_out_is_a_file(tmp, kit):
    s = scan(tmp / "a.nii.gz")
    (tmp / "o").write_text("x")
    return Bad(predict(kit, [s], tmp / "o"), r"--out \S*o is a file, not a folder", [s, tmp / "o"])


def t_predict_out_under_a_file(tmp, kit):
    s = scan(tmp / "a.nii.gz")
    (tmp / "o").write_text("x")
    return Bad(predict(kit, [s], tmp / "o" / "sub"), r"cannot be created: \S*o is a file", [s, tmp / "o"])


def t_predict_outputs_exist(tmp, kit):
    s = scan(tmp / "in" / "a.nii.gz")
    out = tmp / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"earlier label")
    return Bad(predict(kit, [s], out), r"outputs exist: \S*a\.nii\.gz", [s], out)


def t_predict_in_place_without_suffix(tmp, kit):
    scan(tmp / "in" / "a.nii.gz")
    return Bad(predict(kit, [tmp / "in"], tmp / "in", "--in-place-ok"), r"would replace the input scan", [tmp / "in"])


def t_predict_missing_checkpoint(tmp, kit):
    s = scan(tmp / "a.nii.gz")
    argv = ["predict", "--checkpoint", str(tmp / "none.pt"), "--input", str(s), "--out", str(tmp / "out")]
    return Bad(argv, r"none\.pt", [s], tmp / "out")


def t_predict_text_checkpoint(tmp, kit):
    s = scan(tmp / "a.nii.gz")
    (tmp / "best.pt").write_text("not a checkpoint")
    argv = ["predict", "--checkpoint", str(tmp / "best.pt"), "--input", str(s), "--out", str(tmp / "out")]
    return Bad(argv, r"best\.pt", [s, tmp / "best.pt"], tmp / "out")


def t_predict_bad_device(tmp, kit):
    s = scan(tmp / "a.nii.gz")
    return Bad(predict(kit, [s], tmp / "out", "--device", "gpu7"), r"--device", [s], tmp / "out")


def t_predict_two_channel_files_in_one_case(tmp, kit):
    a = scan(tmp / "in" / "a.nii.gz")
    b = scan(tmp / "in2" / "a.nii.gz", seed=2)
    return Bad(predict(kit, [a, b], tmp / "out"), r"two inputs share a file name", [a, b], tmp / "out")


# ------------------------------------------------------------------------------------------------ evaluate
def _evaluate(pred, gt, out, *extra) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), *extra]


def t_evaluate_last_prediction_cut_off(tmp, kit):
    pred, gt = pred_gt(tmp)
    cut(pred / "c2.nii.gz", 0.6)
    out = kept_out(tmp)
    return Bad(_evaluate(pred, gt, out), r"c2\.nii\.gz: cannot read NIfTI", [pred, gt], out)


def t_evaluate_label_out_of_range(tmp, kit):
    pred, gt = pred_gt(tmp)
    label(gt / "c2.nii.gz", np.full((12, 10, 4), 7, np.uint8))
    out = kept_out(tmp)
    return Bad(_evaluate(pred, gt, out, "--num-classes", "3"), r"c2\.nii\.gz: labels 7\.\.7 outside 0\.\.2",
               [pred, gt], out)  # fmt: skip


def t_evaluate_float_label(tmp, kit):
    pred, gt = pred_gt(tmp)
    label(pred / "c1.nii.gz", np.full((12, 10, 4), 0.5, np.float32))
    return Bad(_evaluate(pred, gt, tmp / "out"), r"c1\.nii\.gz: label file holds non-integer values", [pred, gt],
               tmp / "out")  # fmt: skip


def t_evaluate_case_sets_differ(tmp, kit):
    pred, gt = pred_gt(tmp)
    (pred / "c1.nii.gz").rename(pred / "c9.nii.gz")
    return Bad(_evaluate(pred, gt, tmp / "out"), r"missing in --gt: c9\.nii\.gz", [pred, gt], tmp / "out")


def t_evaluate_geometry_differs(tmp, kit):
    pred, gt = pred_gt(tmp)
    label(pred / "c0.nii.gz", np.zeros((12, 10, 5), np.uint8))
    return Bad(_evaluate(pred, gt, tmp / "out"), r"geometry differs between \S*pred/c0\.nii\.gz", [pred, gt],
               tmp / "out")  # fmt: skip


def t_evaluate_binary_labels_json(tmp, kit):
    pred, gt = pred_gt(tmp)
    (tmp / "dataset.json").write_bytes(b"\x1f\x8b\x08\x00binary")
    return Bad(_evaluate(pred, gt, tmp / "out", "--labels", str(tmp / "dataset.json")), r"dataset\.json",
               [pred, gt, tmp / "dataset.json"], tmp / "out")  # fmt: skip


def t_evaluate_empty_class_name(tmp, kit):
    pred, gt = pred_gt(tmp)
    return Bad(_evaluate(pred, gt, tmp / "out", "--class-names", "RV,,LV"), r"--class-names 'RV,,LV' has an empty "
               "name", [pred, gt], tmp / "out")  # fmt: skip


def t_evaluate_one_class(tmp, kit):
    pred, gt = pred_gt(tmp)
    return Bad(_evaluate(pred, gt, tmp / "out", "--num-classes", "1"), r"--num-classes must be >= 2", [pred, gt])


def t_evaluate_pred_folder_missing(tmp, kit):
    _, gt = pred_gt(tmp)
    return Bad(_evaluate(tmp / "nopred", gt, tmp / "out"), r"--pred folder \S*nopred does not exist", [gt], tmp / "out")


def t_evaluate_data_root_is_a_file(tmp, kit):
    (tmp / "root").write_text("x")
    return Bad(["evaluate", "--checkpoint", str(kit.run), "--data-root", str(tmp / "root"), "--out", str(tmp / "ev")],
               r"--data-root \S*root is a file, not a folder", [kit.run, tmp / "root"], tmp / "ev")  # fmt: skip


def t_evaluate_recorded_root_gone(tmp, kit):
    cfg = {**PHANTOM, "root": str(tmp / "moved")}
    ckpt = _checkpoint(tmp / "run" / "checkpoints" / "best.pt", tmp / "moved")
    assert json.dumps(cfg)
    return Bad(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp / "ev")], r"no phantom2d dataset at data\.root"
               r": \S*moved does not exist.*arco data phantom --kind 2d", [ckpt], tmp / "moved")  # fmt: skip


# ------------------------------------------------------------------------------------------------ arco data
def t_export_last_volume_cut_off(tmp, kit):
    root = tmp / "p2d"
    shutil.copytree(kit.phantom, root)
    last = sorted((root / "data").glob("*.h5"))[-1]
    cut(last)
    out = kept_out(tmp)
    return Bad(["data", "export", str(root), "--out", str(out)], rf"{last.name}: cannot read h5 file", [root], out)


def t_export_missing_root(tmp, kit):
    return Bad(["data", "export", str(tmp / "nope"), "--out", str(tmp / "out")], r"\S*nope does not exist", [],
               tmp / "nope")  # fmt: skip


def t_export_out_under_a_file(tmp, kit):
    (tmp / "file").write_text("x")
    return Bad(["data", "export", str(kit.phantom), "--out", str(tmp / "file" / "sub")], r"cannot be created: \S*file "
               "is a file", [kit.phantom, tmp / "file"])  # fmt: skip


def t_convert_msd_last_case_cut_off(tmp, kit):
    task = make_msd_task(tmp / "Task05_Prostate", cases=3)
    last = sorted((task / "imagesTr").glob("*.nii.gz"))[-1]
    cut(last, 0.6)
    out = tmp / "Dataset005_Prostate"
    return Bad(["data", "convert", "msd", str(task), "--out", str(out)], rf"{last.name}: cannot read", [task], out)


def t_convert_msd_last_label_cut_off(tmp, kit):
    task = make_msd_task(tmp / "Task05_Prostate", cases=3)
    last = sorted((task / "labelsTr").glob("*.nii.gz"))[-1]
    cut(last, 0.9)  # the header survives: copying the file unread would pass it on
    out = kept_out(tmp)
    argv = ["data", "convert", "msd", str(task), "--out", str(out), "--overwrite"]
    return Bad(argv, rf"{last.name}: cannot read NIfTI", [task], out)


def t_convert_out_inside_input(tmp, kit):
    task = make_msd_task(tmp / "Task05_Prostate", cases=3)
    return Bad(["data", "convert", "msd", str(task), "--out", str(task / "out")], r"overlaps the input", [task])


def t_convert_acdc_missing_raw(tmp, kit):
    return Bad(["data", "convert", "acdc", str(tmp / "ACDC"), "--out", str(tmp / "out")], r"ACDC", [], tmp / "out")


def t_preprocess_last_case_cut_off(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    cut(root / "imagesTr" / "case_003_0000.nii.gz", 0.6)
    out = tmp / "pp"
    return Bad(["data", "preprocess", str(root), "--out", str(out), "--spacing", "3", "1", "1"],
               r"case case_003 \(\S*case_003_0000\.nii\.gz\) failed: .*left as it was", [root], out)  # fmt: skip


def t_preprocess_label_out_of_range(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    nib.save(nib.Nifti1Image(np.full((16, 14, 5), 9, np.uint8), np.eye(4)), str(root / "labelsTr" / "case_003.nii.gz"))
    out = tmp / "pp"
    return Bad(["data", "preprocess", str(root), "--out", str(out), "--no-resample"],
               r"case_003\.nii\.gz: label values 9\.\.9 are outside 0\.\.2", [root], out)  # fmt: skip


def t_preprocess_missing_source(tmp, kit):
    return Bad(["data", "preprocess", str(tmp / "raw"), "--out", str(tmp / "pp")], r"source folder \S*raw not found",
               [], tmp / "pp")  # fmt: skip


def t_preprocess_zero_jobs(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    return Bad(["data", "preprocess", str(root), "--out", str(tmp / "pp"), "--jobs", "0"], r"--jobs must be >= 1",
               [root], tmp / "pp")  # fmt: skip


def t_preprocess_zero_spacing(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    return Bad(["data", "preprocess", str(root), "--out", str(tmp / "pp"), "--spacing", "0", "1", "1"],
               r"--spacing", [root], tmp / "pp")  # fmt: skip


def t_inspect_label_shape_mismatch(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    nib.save(nib.Nifti1Image(np.zeros((16, 14, 4), np.uint8), np.eye(4)), str(root / "labelsTr" / "case_001.nii.gz"))
    return Bad(["data", "inspect", str(root)], r"case_001\.nii\.gz: label shape .* does not match image shape", [root])


def t_inspect_labels_not_a_mapping(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": ["background", "organ", "lesion"]}))
    return Bad(["data", "inspect", str(root)], r"dataset\.json: key 'labels' must be a mapping", [root])


def t_inspect_dataset_json_not_json(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    (root / "dataset.json").write_text("{labels: background}")
    return Bad(["data", "inspect", str(root)], r"dataset\.json: not valid JSON", [root])


def t_inspect_dataset_json_binary(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    shutil.copyfile(root / "imagesTr" / "case_000_0000.nii.gz", root / "dataset.json")
    return Bad(["data", "inspect", str(root)], r"dataset file \S*dataset\.json is not UTF-8 text.*gzip", [root])


def t_inspect_channel_name_not_a_string(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": 7}}))
    return Bad(["data", "inspect", str(root)], r"channel_names\['0'\] must be a channel name", [root])


def t_inspect_image_with_nan(tmp, kit):
    root = make_nnunet(tmp / "nn", cases=4)
    arr = np.zeros((16, 14, 5), np.float32)
    arr[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(root / "imagesTr" / "case_002_0000.nii.gz"))
    return Bad(["data", "inspect", str(root)], r"case_002_0000\.nii\.gz: image has 1 NaN/inf", [root])


def t_inspect_empty_folder(tmp, kit):
    (tmp / "empty").mkdir()
    return Bad(["data", "inspect", str(tmp / "empty")], r"empty", [tmp / "empty"])


def t_phantom_zero_subjects(tmp, kit):
    return Bad(["data", "phantom", "--out", str(tmp / "ph"), "--subjects", "0"], r"subjects", [], tmp / "ph")


def t_phantom_out_under_a_file(tmp, kit):
    (tmp / "file").write_text("x")
    return Bad(["data", "phantom", "--out", str(tmp / "file" / "ph")], r"cannot be created: \S*file is a file",
               [tmp / "file"])  # fmt: skip


def t_demo_out_under_a_file(tmp, kit):
    (tmp / "file").write_text("x")
    return Bad(["demo", "--out", str(tmp / "file" / "d")], r"cannot be created: \S*file is a file", [tmp / "file"])


CASES = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("t_") and callable(fn)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, kit, capsys):
    check_bad(CASES[name](tmp_path, kit), capsys)


# ------------------------------------------------------------------------------------- what the fixes allow
def test_allow_slice_gaps_accepts_a_gap_and_says_so(tmp_path, kit, capsys):
    series = dicom_series(tmp_path / "series", zs=(0.0, 2.5, 7.5, 10.0))
    assert main(predict(kit, [series], tmp_path / "out", "--allow-slice-gaps")) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "note: accepted with --allow-slice-gaps" in printed and "1 slice(s) missing between slice001.dcm" in printed
    assert nib.load(str(tmp_path / "out" / "series.nii.gz")).shape == (24, 20, 4)  # one slice per file


def test_a_complete_series_predicts_every_slice(tmp_path, kit):
    series = dicom_series(tmp_path / "series")
    assert main(predict(kit, [series], tmp_path / "out")) == 0
    assert nib.load(str(tmp_path / "out" / "series.nii.gz")).shape == (24, 20, 4)


def test_predict_staging_leaves_only_the_labels(tmp_path, kit):
    scan(tmp_path / "in" / "a.nii.gz")
    out = kept_out(tmp_path)
    assert main(predict(kit, [tmp_path / "in"], out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "keep.txt"]  # no staging folder left
    assert not [p for p in tmp_path.iterdir() if "arco-staging" in p.name]


def test_preprocess_failure_keeps_finished_cases_for_the_rerun(tmp_path, capsys):
    root = make_nnunet(tmp_path / "nn", cases=4)
    good = (root / "imagesTr" / "case_003_0000.nii.gz").read_bytes()
    cut(root / "imagesTr" / "case_003_0000.nii.gz", 0.6)
    argv = ["data", "preprocess", str(root), "--out", str(tmp_path / "pp"), "--no-resample"]
    assert main(argv) == 2
    assert not (tmp_path / "pp").exists()
    staged = tmp_path / ".pp.arco-partial" / "cases"
    assert sorted(p.stem for p in staged.glob("*.json")) == ["case_000", "case_001", "case_002"]
    (root / "imagesTr" / "case_003_0000.nii.gz").write_bytes(good)
    capsys.readouterr()
    assert main(argv) == 0
    assert "(1 done, 3 unchanged, 0 removed)" in capsys.readouterr().out
    index = json.loads((tmp_path / "pp" / "preprocessed.json").read_text())
    assert sorted(index["cases"]) == [f"case_{i:03d}" for i in range(4)]
    assert not (tmp_path / ".pp.arco-partial").exists()


def test_a_failed_evaluate_creates_no_folders(tmp_path, capsys):
    pred, gt = pred_gt(tmp_path)
    cut(pred / "c2.nii.gz", 0.6)
    before = digest(tmp_path)
    assert main(_evaluate(pred, gt, tmp_path / "a" / "b" / "out")) == 2
    assert digest(tmp_path) == before
