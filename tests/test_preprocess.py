"""`arco data preprocess` and the lazy `preprocessed` dataset: geometry (resampling, crop, restore), normalisation,
fingerprints and incremental reruns, lazy reads (same patches as an eager read, no whole-volume reads, workers),
training through the CLI, and bad inputs."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import arco.data.lazy as lazy
from arco._checks import ConfigError, DataError
from arco.cli import main
from arco.data import DataConfig, build_data
from arco.data.fingerprint import file_fingerprint, file_hash, matches
from arco.data.preprocess import preprocess_dataset
from arco.data.preprocess_case import class_locations
from arco.data.preprocessed import read_index, to_original
from arco.data.resample import bounding_box, resample_image, resample_label, target_shape
from arco.evaluation.inference import predict_volume

SPACING = (2.5, 0.8, 0.8)  # (Z, Y, X) mm
BODY = (slice(1, 9), slice(3, 17), slice(2, 20))  # inside (10, 20, 22): the rest is air


def _nii(path: Path, zyx: np.ndarray, spacing=SPACING) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ascontiguousarray(zyx.T), np.diag([*spacing[::-1], 1.0]))
    img.header.set_zooms(spacing[::-1])
    nib.save(img, str(path))


def make_ct(root: Path, cases=6, shape=(10, 20, 22), spacing=SPACING, labels=None) -> Path:
    """nnU-Net raw folder of CT-like cases: air (-1000 HU) around a body box, a liver-like box and a small
    lesion inside it. Case i is shifted by i voxels in x so cases differ."""
    labels = labels or {"background": 0, "liver": 1, "tumour": 2}
    rng = np.random.default_rng(0)
    for i in range(cases):
        lab = np.zeros(shape, np.uint8)
        lab[3:7, 6:13, 5 + i % 3 : 14 + i % 3] = 1
        lab[4:6, 8:10, 8 + i % 3 : 10 + i % 3] = 2
        img = np.full(shape, -1000.0, np.float32)
        img[BODY] = 40.0
        img[lab == 1], img[lab == 2] = 100.0, 180.0
        img += rng.normal(0, 5, shape).astype(np.float32)
        _nii(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", img.astype(np.int16), spacing)
        _nii(root / "labelsTr" / f"case_{i:03d}.nii.gz", lab, spacing)
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": cases, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ct")
    raw = make_ct(base / "raw")
    out = base / "pp"
    preprocess_dataset(raw, out, dataset="lits", spacing="original")
    return raw, out


# ------------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize(
    "spacing, target, expected",
    [
        ((3.0, 0.5, 0.5), (1.5, 1.0, 1.0), (20, 20, 20)),  # isotropic-ish path, 3D cubic
        ((5.0, 0.5, 0.5), (2.5, 1.0, 1.0), (20, 20, 20)),  # anisotropic: z separately, nearest
        ((2.0, 1.0, 1.0), (2.0, 1.0, 1.0), (10, 40, 40)),  # unchanged
    ],
)
def test_resampling_shape_and_physical_extent(spacing, target, expected):
    label = np.zeros((10, 40, 40), np.uint8)
    label[2:7, 10:30, 5:25] = 1  # extent 5, 20, 20 voxels
    shape = target_shape(label.shape, spacing, target)
    assert shape == expected
    out = resample_label(label, shape)
    assert out.shape == expected and out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    box = bounding_box(out > 0)
    for (a, b), n_old, s_old, s_new in zip(box, (5, 20, 20), spacing, target):
        assert abs((b - a) * s_new - n_old * s_old) <= s_new + 1e-9  # physical extent kept within one voxel
    image = resample_image(label.astype(np.float32), shape, spacing)
    assert image.shape == expected and image.dtype == np.float32


def test_resampling_aligns_voxel_edges_on_a_linear_ramp():
    # The value of each voxel is the physical y coordinate (mm) of its centre; after resampling every interior
    # voxel must hold the y of its own new centre (a cubic spline reproduces a linear function exactly). The new
    # shape is rounded (40 * 0.7 / 1.3 = 21.5 -> 22), so the grid's real spacing is 28 mm / 22 voxels.
    old, new = (1.0, 0.7, 1.0), (1.0, 1.3, 1.0)
    y = (np.arange(40) + 0.5) * old[1]
    image = np.broadcast_to(y[None, :, None], (3, 40, 4)).astype(np.float32)
    shape = target_shape(image.shape, old, new)
    assert shape == (3, 22, 4)
    out = resample_image(image, shape, old)
    expected = (np.arange(shape[1]) + 0.5) * (40 * 0.7 / 22)
    np.testing.assert_allclose(out[1, 3:-3, 2], expected[3:-3], atol=1e-3)


def test_target_shape_keeps_2d_cases_flat():
    assert target_shape((1, 64, 64), (1.0, 1.0, 1.0), (5.0, 2.0, 2.0)) == (1, 32, 32)


def test_body_crop_and_ct_normalisation(ct):
    raw, out = ct
    e = read_index(out)["cases"]["case_000"]
    assert [tuple(b) for b in e["crop_box"]] == [(s.start, s.stop) for s in BODY]
    stored = np.load(out / "cases" / e["image"])
    src = np.asarray(nib.load(str(raw / "imagesTr" / "case_000_0000.nii.gz")).dataobj).T.astype(np.float32)
    expected = (np.clip(src[BODY], -200, 250) + 200) / 450
    assert stored.shape == (1, *expected.shape) and stored.dtype == np.float32
    np.testing.assert_allclose(stored[0], expected, atol=1e-6)
    lab = np.load(out / "cases" / e["label"])
    assert lab.dtype == np.uint8 and e["class_voxels"] == np.bincount(lab.ravel(), minlength=3).tolist()


def test_foreground_crop_zscore_and_restore(tmp_path):
    raw = make_ct(tmp_path / "raw", cases=2)
    out = tmp_path / "pp"
    preprocess_dataset(raw, out, spacing="original", crop="foreground", margin=1, normalization="zscore")
    e = read_index(out)["cases"]["case_001"]
    assert [tuple(b) for b in e["crop_box"]] == [(2, 8), (5, 14), (5, 16)]  # label box (3:7, 6:13, 6:15) + 1
    img = np.load(out / "cases" / e["image"])[0]
    assert abs(img.mean()) < 1e-4 and abs(img.std() - 1) < 1e-4
    label = np.load(out / "cases" / e["label"])
    src = np.asarray(nib.load(str(raw / "labelsTr" / "case_001.nii.gz")).dataobj).T
    np.testing.assert_array_equal(to_original(label, out, "case_001"), src)


def test_resampled_case_maps_back_and_keeps_world_position(tmp_path):
    raw = make_ct(tmp_path / "raw", cases=2)
    out = tmp_path / "pp"
    preprocess_dataset(raw, out, spacing=(1.25, 0.4, 0.4), crop="none")  # exactly 2x finer on every axis
    e = read_index(out)["cases"]["case_000"]
    assert e["shape"] == [1, 20, 40, 44] and e["spacing"] == [1.25, 0.4, 0.4]
    label = np.load(out / "cases" / e["label"])
    src = np.asarray(nib.load(str(raw / "labelsTr" / "case_000.nii.gz")).dataobj).T
    np.testing.assert_array_equal(to_original(label, out, "case_000"), src)  # 2x nearest up then down is exact

    def centroid_world(lab, affine):
        zyx = np.argwhere(lab == 1).mean(axis=0)
        return (np.asarray(affine) @ np.r_[zyx[::-1], 1.0])[:3]

    np.testing.assert_allclose(centroid_world(label, e["affine"]), centroid_world(src, e["original"]["affine"]))


def test_class_locations_follow_the_nnunet_rule():
    label = np.zeros((4, 50, 50), np.uint8)
    label[0, :10, :10] = 1  # 100 voxels
    label[1:] = 2  # 7500 voxels
    locs, counts = class_locations(label, 4, num=200, seed=0)
    assert counts == [0, 100, 200, 0]
    assert locs.shape == (300, 4) and (label[tuple(locs[:, 1:].T)] == locs[:, 0]).all()
    assert len({tuple(r) for r in locs}) == 300  # without replacement


# ------------------------------------------------------------------------------------------------ fingerprint


def test_fast_hash_and_full_hash(tmp_path):
    path = tmp_path / "scan.bin"
    data = bytearray(os.urandom(3 << 20))
    path.write_bytes(bytes(data))
    fp_fast, fp_full = file_fingerprint(path, "fast"), file_fingerprint(path, "full")
    data[len(data) // 2] ^= 0xFF  # same size, change in the middle: only the full hash sees it
    path.write_bytes(bytes(data))
    assert file_hash(path, "fast") == fp_fast["hash"] and file_hash(path, "full") != fp_full["hash"]
    assert matches(path, fp_fast) and not matches(path, fp_full)
    data[10] ^= 0xFF  # in the first MiB: the fast hash sees it too
    path.write_bytes(bytes(data))
    assert not matches(path, fp_fast)


def test_changed_source_is_detected_and_rerun_is_incremental(tmp_path):
    raw = make_ct(tmp_path / "raw", cases=4)
    out = tmp_path / "pp"
    first = preprocess_dataset(raw, out, spacing="original")
    assert (first["processed"], first["skipped"]) == (4, 0)
    tumour = read_index(out)["cases"]["case_002"]["class_voxels"][2]
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}
    again = preprocess_dataset(raw, out, spacing="original")
    assert (again["processed"], again["skipped"]) == (0, 4)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}  # nothing rewritten
    os.utime(raw / "labelsTr" / "case_002.nii.gz")  # touched, same bytes: still up to date
    cfg = DataConfig(dataset="preprocessed", root=str(out), labeled="1", patch_size=(4, 8, 8))
    build_data(cfg)
    lab = np.asarray(nib.load(str(raw / "labelsTr" / "case_002.nii.gz")).dataobj).T.copy()
    lab[2, 5, 5] = 2  # background inside the body box -> one more tumour voxel
    _nii(raw / "labelsTr" / "case_002.nii.gz", lab)
    with pytest.raises(DataError, match=r"changed 1 \(case_002\).*Rerun `arco data preprocess"):
        build_data(cfg)
    rerun = preprocess_dataset(raw, out, spacing="original")
    assert (rerun["processed"], rerun["skipped"]) == (1, 3)
    assert read_index(out)["cases"]["case_002"]["class_voxels"][2] == tumour + 1
    build_data(cfg)
    # other settings redo everything; a removed case is removed from the copy
    (raw / "imagesTr" / "case_003_0000.nii.gz").unlink()
    (raw / "labelsTr" / "case_003.nii.gz").unlink()
    (raw / "dataset.json").write_text(json.dumps({**json.loads((raw / "dataset.json").read_text()), "numTraining": 3}))
    with pytest.raises(DataError, match=r"removed 1 \(case_003\)"):
        build_data(cfg)
    info = preprocess_dataset(raw, out, spacing="original", dtype="float16")
    assert (info["processed"], info["removed"]) == (3, ["case_003"])
    assert not list((out / "cases").glob("case_003*"))
    assert np.load(out / "cases" / "case_000_image.npy", mmap_mode="r").dtype == np.float16


def test_missing_source_only_warns(tmp_path):
    raw = make_ct(tmp_path / "raw", cases=3)
    out = tmp_path / "pp"
    preprocess_dataset(raw, out, spacing="original")
    raw.rename(tmp_path / "moved")
    with pytest.warns(UserWarning, match="not reachable"):
        d = build_data(DataConfig(dataset="preprocessed", root=str(out), labeled="1", patch_size=(4, 8, 8)))
    assert len(d.labeled) == 1


# ------------------------------------------------------------------------------------------------ lazy reads


def _cfg(out: Path, **kw) -> DataConfig:
    base = {"dataset": "preprocessed", "root": str(out), "labeled": "2", "spatial_dims": 3, "patch_size": (4, 8, 8)}
    base["augment"] = False
    return DataConfig(**{**base, **kw})


def test_split_matches_the_nnunet_dataset_on_the_raw_folder(ct):
    raw, out = ct
    kw = {"labeled": "2", "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 3, "spatial_dims": 2}
    lazy_split = build_data(DataConfig(dataset="preprocessed", root=str(out), **kw)).split
    raw_split = build_data(DataConfig(dataset="lits", root=str(raw), **kw)).split
    for part in ("labeled", "unlabeled", "val", "test"):
        assert lazy_split[part] == raw_split[part], part


def test_lazy_3d_patch_equals_an_eager_read(ct):
    _, out = ct
    d = build_data(_cfg(out, oversample_foreground=0.0))
    ds, table = d.labeled, d.labeled.table
    for i in range(len(ds)):
        torch.manual_seed(i)
        start = ds.patch_start(i)
        torch.manual_seed(i)
        item = ds[i]
        image = np.load(table.image[i])[0]  # eager: the whole case in memory
        label = np.load(table.label[i])
        sl = tuple(slice(a, a + p) for a, p in zip(start, d.patch_size))
        assert min(start) >= 0 and all(a + p <= s for a, p, s in zip(start, d.patch_size, image.shape))
        np.testing.assert_array_equal(item["image"][0].numpy(), image[sl])
        np.testing.assert_array_equal(item["label"].numpy(), label[sl].astype(np.int64))


def test_lazy_2d_slice_equals_an_eager_read_and_patches_pad(ct):
    _, out = ct
    entry = read_index(out)["cases"]["case_000"]
    z, h, w = entry["shape"][1:]
    d = build_data(_cfg(out, labeled="case_000", spatial_dims=2, patch_size=(h, w), oversample_foreground=0.0))
    assert len(d.labeled) == z and d.labeled.ids[3] == "case_000_slice_3"
    image, label = np.load(out / "cases" / entry["image"])[0], np.load(out / "cases" / entry["label"])
    item = d.labeled[3]
    np.testing.assert_array_equal(item["image"][0].numpy(), image[3])
    np.testing.assert_array_equal(item["label"].numpy(), label[3])
    big = build_data(_cfg(out, labeled="case_000", patch_size=(z + 4, h, w + 2), oversample_foreground=0.0))
    torch.manual_seed(0)
    patch = big.labeled[0]["image"][0].numpy()  # larger than the case: the case sits inside zero padding
    assert patch.shape == (z + 4, h, w + 2) and np.count_nonzero(patch) == np.count_nonzero(image)


class _CountingArray:
    """Stands in for a memory-mapped array and counts the elements each index operation returns."""

    reads: list[int] = []

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.shape, self.ndim, self.dtype = arr, arr.shape, arr.ndim, arr.dtype

    def __getitem__(self, key):
        out = self.arr[key]
        _CountingArray.reads.append(int(np.size(out)))
        return out


@pytest.mark.parametrize("dims", [2, 3])
def test_items_read_only_their_patch(ct, monkeypatch, dims):
    _, out = ct
    real = lazy.open_array
    monkeypatch.setattr(lazy, "open_array", lambda path: _CountingArray(real(path)))
    patch = (8, 8) if dims == 2 else (4, 8, 8)
    d = build_data(_cfg(out, spatial_dims=dims, patch_size=patch, oversample_foreground=0.5, augment=True))
    case_voxels = int(np.prod(d.labeled.table.shapes[0, 1:]))
    for i in range(len(d.labeled)):
        _CountingArray.reads.clear()
        d.labeled[i]
        read = np.prod(d.labeled.table.shapes[0, 2:]) if dims == 2 else np.prod(patch)
        # image + label (+ one 3-value location row when oversampled), never a whole case
        assert sum(_CountingArray.reads) <= 2 * read + 3 < case_voxels
    vol = d.val[0]
    assert isinstance(real(d.labeled.table.image[0]), np.memmap) and isinstance(vol.image, np.memmap)


def test_foreground_oversampling(tmp_path):
    raw = make_ct(tmp_path / "raw", cases=3, shape=(12, 20, 22))
    out = tmp_path / "pp"
    preprocess_dataset(raw, out, spacing="original", crop="none")
    patch = (2, 3, 3)
    always = build_data(
        _cfg(out, labeled="all", val_fraction=0, test_fraction=0.01, patch_size=patch, oversample_foreground=1.0)
    )
    assert always.labeled.oversample == 1.0 and always.unlabeled.oversample == 0.0  # never with hidden labels
    for i in range(60):
        assert (always.labeled[i % len(always.labeled)]["label"] > 0).any()
    # Uniform patches hit the tumour (2x2x2 voxels) with a probability q computed from the geometry; 600 draws,
    # tolerance z = 4 standard errors.
    never = build_data(
        _cfg(out, labeled="all", val_fraction=0, test_fraction=0.01, patch_size=patch, oversample_foreground=0.0)
    )
    ds = never.labeled
    label0 = np.load(ds.table.label[0])
    tum = np.argwhere(label0 == 2)
    q = 1.0
    for ax, (n, p) in enumerate(zip(label0.shape, patch)):
        starts = np.arange(n - p + 1)
        lo, hi = tum[:, ax].min(), tum[:, ax].max()
        q *= np.mean((starts <= hi) & (starts + p - 1 >= lo))
    n = 600
    hits = 0
    for k in range(n):
        torch.manual_seed(k)
        hits += int((ds[0]["label"] == 2).any())
    assert abs(hits / n - q) <= 4 * np.sqrt(q * (1 - q) / n)


def test_dataloader_workers_give_the_same_batches(ct):
    from arco.engine import BatchStream

    _, out = ct
    d = build_data(_cfg(out, spatial_dims=2, patch_size=(16, 16), augment=True))

    def batches(workers):
        stream = BatchStream(d.labeled, d.unlabeled, 2, 2, seed=0, start=0, total=6, num_workers=workers)
        return [(b.image_l, b.label_l, b.image_u) for b in stream]

    for a, b in zip(batches(0), batches(2), strict=True):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    # spawn/forkserver workers receive the datasets pickled: paths and small tables only
    blob = pickle.dumps(d.labeled)
    assert len(blob) < 10_000
    torch.manual_seed(0)
    a = pickle.loads(blob)[1]
    torch.manual_seed(0)
    torch.testing.assert_close(a, d.labeled[1], rtol=0, atol=0)


@pytest.mark.slow  # ~9 s: each spawned worker imports torch through arco.data
def test_jobs_give_the_same_files(tmp_path):
    raw = make_ct(tmp_path / "raw", cases=4)
    one = preprocess_dataset(raw, tmp_path / "one", spacing=(2.0, 1.0, 1.0), jobs=1)
    two = preprocess_dataset(raw, tmp_path / "two", spacing=(2.0, 1.0, 1.0), jobs=2)
    assert one["processed"] == two["processed"] == 4
    for f in sorted((tmp_path / "one" / "cases").glob("*.npy")):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "two" / "cases" / f.name))


def test_lazy_volumes_evaluate_like_eager_ones(ct):
    from arco.data import Volume
    from arco.evaluation.report import evaluate

    _, out = ct
    d = build_data(_cfg(out, spatial_dims=2, patch_size=(16, 16), val_fraction=0.3))

    def predict(x):  # (B, 1, H, W) in [0, 1] after the CT window -> logits of 3 classes by intensity
        return torch.cat([0.5 - x, (x - 0.5) * (0.7 - x) * 8, x - 0.7], dim=1) * 10

    eager = [Volume(v.case_id, np.array(v.image), np.array(v.label).astype(np.int64), v.spacing) for v in d.val]
    r_lazy = evaluate(predict, d.val, 3, 2, (16, 16), overlays=0)
    r_eager = evaluate(predict, eager, 3, 2, (16, 16), overlays=0)
    assert r_lazy.rows == r_eager.rows and len(r_lazy.rows) == 2 * len(d.val)
    labels, probs = predict_volume(predict, d.val[0].image, 2, (16, 16), batch_size=3, return_probs=True)
    assert probs.shape == (3, *d.val[0].shape)
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_train_from_a_preprocessed_folder_through_the_cli(ct, tmp_path):
    _, out = ct
    sets = [
        "data.dataset=preprocessed",
        f"data.root={out}",
        "data.labeled=2",
        "data.patch_size=[16, 16]",
        "schedule.iterations=2",
        "schedule.batch_labeled=2",
        "engine.device=cpu",
        "engine.val_every=2",
        "engine.log_every=1",
        "engine.progress=false",
        "engine.num_workers=0",
    ]
    args = ["train", "--config", "nnunet", "--method", "supervised", "--out", str(tmp_path / "run")]
    assert main([*args, *[a for kv in sets for a in ("--set", kv)]]) == 0
    run = tmp_path / "run" / "supervised"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["completed_iterations"] == 2 and summary["best_val_dice"] is not None
    split = json.loads((run / "split.json").read_text())
    assert split["dataset"] == "preprocessed" and split["preprocessing"] == read_index(out)["settings_key"]


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_inputs(tmp_path, ct):
    raw, out = ct
    with pytest.raises(DataError, match="source folder .*nope not found"):
        preprocess_dataset(tmp_path / "nope", tmp_path / "o1")
    with pytest.raises(ValueError, match="spacing must be 3 positive finite numbers"):
        preprocess_dataset(raw, tmp_path / "o2", spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="must not be the source folder"):
        preprocess_dataset(raw, raw)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no preprocessed data"):
        preprocess_dataset(raw, foreign)
    with pytest.raises(FileExistsError, match="holds a preprocessed copy of"):
        preprocess_dataset(make_ct(tmp_path / "other", cases=2), out)
    with pytest.raises(DataError, match="preprocessed.json: not found"):
        build_data(_cfg(tmp_path / "o1"))
    with pytest.raises(ConfigError, match="preprocessed with 'ct'"):
        build_data(_cfg(out, normalization="zscore"))
    with pytest.raises(ConfigError, match="oversample_foreground must be in"):
        build_data(_cfg(out, oversample_foreground=1.5))


def test_corrupt_source_file_and_bad_header_spacing(tmp_path):
    raw = make_ct(tmp_path / "raw", cases=3)
    (raw / "labelsTr" / "case_001.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"case_001.nii.gz: cannot read NIfTI"):
        preprocess_dataset(raw, tmp_path / "pp", spacing="original")
    assert not (tmp_path / "pp" / "preprocessed.json").exists()
    raw2 = make_ct(tmp_path / "raw2", cases=2)
    path = raw2 / "imagesTr" / "case_001_0000.nii.gz"
    header = bytearray(gzip.decompress(path.read_bytes()))
    header[88:92] = np.float32(np.nan).tobytes()  # pixdim[3] (slice thickness); nibabel itself turns 0 into 1
    path.write_bytes(gzip.compress(bytes(header)))
    with pytest.raises(DataError, match=r"header pixdim: spacing must be 3 positive"):
        preprocess_dataset(raw2, tmp_path / "pp2")


def test_cli_errors_exit_2_without_traceback(tmp_path, ct):
    raw, _ = ct
    cmd = [sys.executable, "-m", "arco", "data", "preprocess", str(raw), "--out", str(tmp_path / "o"), "--spacing"]
    proc = subprocess.run(
        [*cmd, "1", "-2", "1"], capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--spacing" in proc.stderr
    assert main(["data", "preprocess", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_cli_preprocess_then_rerun(tmp_path, capsys):
    raw = make_ct(tmp_path / "raw", cases=3)
    out = tmp_path / "pp"
    assert main(["data", "preprocess", str(raw), "--out", str(out), "--dataset", "lits", "--no-resample"]) == 0
    assert "3 done, 0 unchanged" in capsys.readouterr().out
    assert main(["data", "preprocess", str(raw), "--out", str(out), "--dataset", "lits", "--no-resample"]) == 0
    assert "0 done, 3 unchanged" in capsys.readouterr().out
    assert read_index(out)["cases"]["case_000"]["fingerprint"]["image"]["mode"] == "fast"
    full = ["data", "preprocess", str(raw), "--out", str(out), "--dataset", "lits", "--no-resample", "--full-hash"]
    assert main(full) == 0  # switching to full hashes re-fingerprints, it does not redo the cases
    assert "0 done, 3 unchanged" in capsys.readouterr().out
    assert read_index(out)["cases"]["case_000"]["fingerprint"]["image"]["mode"] == "full"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(build_data(_cfg(out, labeled="1")).labeled) == 1


def test_evaluation_keeps_no_whole_prediction_per_case():
    import weakref

    from arco.evaluation.report import _score_case

    gt = np.zeros((6, 8, 8), np.int64)
    gt[2:4, 2:6, 2:6] = 1
    pred = gt.copy()
    ref = weakref.ref(pred)
    case = _score_case("c", pred, gt, None, None, 2, ["fg"], "default", [])
    del pred
    assert ref() is None and case.pred.shape == (8, 8)  # the overlay slice is a copy, not a view of the volume
