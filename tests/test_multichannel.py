"""Multi-channel input: nnU-Net channel files and channel_names through loading, per-channel normalisation,
augmentation, inference, the MP-MRI phantom, and train -> evaluate -> predict end to end."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from _tiny import make_phantom
from arco._checks import ConfigError, DataError
from arco.augment import color_jitter
from arco.cli import main
from arco.data import DataConfig, build_data, inspect_dataset
from arco.data.cases import collect_cases
from arco.data.phantom import ensure_phantom
from arco.data.phantom_mp import MP_CHANNELS, phantom_mp_subject
from arco.data.transforms import weak_2d, weak_3d
from arco.data.volume import channel_scheme, resolve_normalization
from arco.evaluation import predict_volume

AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


# ----------------------------------------------------------------------------------- augmentation
def test_weak_2d_moves_all_channels_together():
    rng = np.random.default_rng(0)
    base = np.kron(rng.random((6, 5)), np.ones((8, 8))).astype(np.float32)  # (48, 40)
    image = np.stack([base, 2 * base, base])  # channel 1 is a linear function of channel 0
    label = (base > 0.5).astype(np.uint8)
    torch.manual_seed(0)
    for _ in range(6):
        x, y = weak_2d(image, label, (32, 32), rotation=30, max_zoom=1.3)
        assert x.shape == (3, 32, 32) and y.shape == (32, 32)
        torch.testing.assert_close(x[1], 2 * x[0])  # same warp for every channel (bilinear is linear)
        torch.testing.assert_close(x[2], x[0])
        assert ((x[0] > 0.5).long() == y).float().mean() > 0.9
    torch.manual_seed(3)
    single, _ = weak_2d(base, label, (32, 32))
    torch.manual_seed(3)
    first, _ = weak_2d(image[:1], label, (32, 32))
    torch.testing.assert_close(single, first, rtol=0, atol=0)  # (H, W) == (1, H, W): unchanged for C = 1


def test_weak_3d_moves_all_channels_together():
    rng = np.random.default_rng(1)
    base = np.kron(rng.random((3, 3, 3)), np.ones((8, 8, 8))).astype(np.float32)
    image = np.stack([base, -base])
    torch.manual_seed(0)
    for _ in range(6):
        x, y = weak_3d(image, (base > 0.5).astype(np.uint8), (16, 16, 16))
        assert x.shape == (2, 16, 16, 16)
        assert torch.equal(x[1], -x[0]) and torch.equal((x[0] > 0.5).long(), y)


def test_color_jitter_uses_each_channels_own_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    image = torch.cat([x, 1000 * x + 500], dim=1)  # e.g. T2 in [0, 1] and ADC in [500, 1500]
    out = color_jitter(image, generator=g, p=1.0)
    torch.testing.assert_close(out[:, 1], 1000 * out[:, 0] + 500, rtol=1e-4, atol=1e-2)
    assert not torch.allclose(out, image)


# ---------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("dims, patch", [(2, (20, 18)), (3, (4, 16, 16))])
def test_predict_volume_feeds_every_channel(dims, patch):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 6, 20, 18)).astype(np.float32)  # channel 0 is noise, channel 1 decides

    def predictor(x):
        assert x.shape[1] == 2
        return torch.stack([-x[:, 1], x[:, 1]], dim=1) * 10

    labels = predict_volume(predictor, image, dims, patch)  # 2D: patch = slice size, so no resizing
    np.testing.assert_array_equal(labels, image[1] > 0)


# ------------------------------------------------------------------------------------ normalisation
@pytest.mark.parametrize(
    "name, scheme", [("CT", "ct"), ("ct", "ct"), ("noNorm", "none"), ("rescale_to_0_1", "minmax"), ("T2", "zscore")]
)
def test_channel_scheme_follows_nnunet(name, scheme):
    assert channel_scheme(name) == scheme


def test_resolve_normalization():
    assert resolve_normalization("", ("CT", "T2")) == ("ct", "zscore")
    assert resolve_normalization("", ("CT", "T2"), default="zscore") == ("zscore", "zscore")  # a preset's fixed rule
    assert resolve_normalization("minmax", ("a", "b", "c")) == ("minmax",) * 3
    assert resolve_normalization("none, zscore", ("a", "b")) == ("none", "zscore")
    with pytest.raises(ConfigError, match="lists 3 schemes but the data has 2 channels"):
        resolve_normalization("none,zscore,ct", ("a", "b"))
    with pytest.raises(ValueError, match="did you mean 'zscore'"):
        resolve_normalization("zscor", ("a",))


def make_mc_nnunet(root: Path, cases=5, names=("CT", "T2"), shape=(12, 10, 4)) -> Path:
    rng = np.random.default_rng(3)
    for i in range(cases):
        lab = rng.integers(0, 2, shape).astype(np.uint8)
        ct = (lab * 300.0 - 400 + rng.standard_normal(shape)).astype(np.float32)  # HU
        t2 = (lab * 50.0 + 800 + rng.standard_normal(shape)).astype(np.float32)
        for c, arr in enumerate((ct, t2)[: len(names)]):
            nib.save(nib.Nifti1Image(arr, AFFINE), str(_mk(root / "imagesTr") / f"c{i}_{c:04d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, AFFINE), str(_mk(root / "labelsTr") / f"c{i}.nii.gz"))
    meta = {"channel_names": {str(i): n for i, n in enumerate(names)}, "labels": {"background": 0, "x": 1}}
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_nnunet_channels_and_per_channel_normalisation(tmp_path):
    root = make_mc_nnunet(tmp_path / "ds")
    d = build_data(DataConfig(dataset="nnunet", root=str(root), labeled="1", patch_size=(4, 8, 8)))
    assert d.in_channels == 2 and d.channel_names == ("CT", "T2") and d.channel_normalization == ("ct", "zscore")
    assert d.normalization == "ct,zscore"
    vol = d.test[0]
    assert vol.image.shape == (2, 4, 10, 12) and vol.in_channels == 2 and vol.shape == (4, 10, 12)
    assert vol.image[0].min() >= 0 and vol.image[0].max() <= 1  # CT window -> [0, 1]
    assert abs(float(vol.image[1].mean())) < 1e-4 and abs(float(vol.image[1].std()) - 1) < 1e-3  # z-score
    assert d.labeled[0]["image"].shape == (2, 4, 8, 8) and d.unlabeled[0]["image"].shape == (2, 4, 8, 8)
    d2 = build_data(
        DataConfig(dataset="nnunet", root=str(root), spatial_dims=2, normalization="minmax", patch_size=(8, 8))
    )
    assert d2.labeled[0]["image"].shape == (2, 8, 8) and d2.channel_normalization == ("minmax", "minmax")


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda r: (r / "imagesTr" / "c2_0001.nii.gz").unlink(), r"c2_0001\.nii\.gz: missing; dataset.json declares 2"),
        (
            lambda r: (r / "imagesTr" / "c2_0002.nii.gz").write_bytes((r / "imagesTr" / "c2_0001.nii.gz").read_bytes()),
            r"c2_0002\.nii\.gz: a channel beyond the 2 declared",
        ),
        (
            lambda r: nib.save(
                nib.Nifti1Image(np.zeros((12, 10, 5), np.float32), AFFINE), str(r / "imagesTr" / "c3_0001.nii.gz")
            ),
            r"c3_0001\.nii\.gz: channel grid .* differs from .*c3_0000\.nii\.gz",
        ),
    ],
)
def test_nnunet_channel_errors_name_the_file(tmp_path, damage, match):
    root = make_mc_nnunet(tmp_path / "ds")
    damage(root)
    with pytest.raises(DataError, match=match):
        build_data(DataConfig(dataset="nnunet", root=str(root), patch_size=(4, 8, 8)))


# ------------------------------------------------------------------------------------------ phantom_mp
def _best_bin_dice(features: np.ndarray, label: np.ndarray, bins: int) -> float:
    """Mean foreground Dice of the best intensity-bin rule: every (joint) quantile bin of ``features`` gets
    the class that maximises the score (majority, or majority weighted by inverse class frequency)."""
    codes = np.zeros(label.size, np.int64)
    for f in features:
        edges = np.quantile(f, np.linspace(0, 1, bins + 1)[1:-1])
        codes = codes * bins + np.searchsorted(edges, f)
    table = np.zeros((codes.max() + 1, 4))
    np.add.at(table, (codes, label), 1)
    best = 0.0
    for weights in (table, table / np.bincount(label, minlength=4)[None]):
        pred = weights.argmax(1)[codes]
        dice = [2 * np.sum((pred == c) & (label == c)) / (np.sum(pred == c) + np.sum(label == c)) for c in (1, 2, 3)]
        best = max(best, float(np.mean(dice)))
    return best


def test_phantom_mp_needs_two_channels():
    # No single channel separates all classes (T2: lesion ~ muscle, ADC: TZ ~ muscle, DWI: only the lesion is
    # bright); T2 + ADC together do. Intensities z-scored per case and channel, as the loader does.
    imgs, labs = [], []
    for i in range(6):
        image, label = phantom_mp_subject(0, i, 64)
        image = (image - image.mean((1, 2, 3), keepdims=True)) / image.std((1, 2, 3), keepdims=True)
        imgs.append(image.reshape(3, -1))
        labs.append(label.ravel())
    x, y = np.concatenate(imgs, 1), np.concatenate(labs).astype(np.int64)
    single = [_best_bin_dice(x[c : c + 1], y, 64) for c in range(3)]
    pair = _best_bin_dice(x[:2], y, 32)
    assert max(single) < 0.45, single
    assert pair > 0.55 and pair > max(single) + 0.15, (pair, single)


def test_phantom_mp_subject_deterministic():
    a, la = phantom_mp_subject(0, 2, 32)
    b, lb = phantom_mp_subject(0, 2, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape[0] == 3 and a.shape[1:] == la.shape and set(np.unique(la)) <= {0, 1, 2, 3}
    assert not np.array_equal(phantom_mp_subject(1, 2, 32)[0], a)


def test_generate_phantom_mp_and_the_dataset_made_when_asked(tmp_path, capsys):
    assert (
        main(["data", "phantom", "--kind", "mp", "--out", str(tmp_path / "mp"), "--subjects", "5", "--size", "32"]) == 0
    )
    assert "T2, ADC, DWI" in capsys.readouterr().out
    meta = json.loads((tmp_path / "mp" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2", "1": "ADC", "2": "DWI"} and meta["numTraining"] == 4
    assert sorted(p.name for p in (tmp_path / "mp" / "imagesTs").iterdir()) == [
        f"mp_005_000{c}.nii.gz" for c in range(3)
    ]
    cfg = DataConfig(dataset="phantom_mp", root=str(tmp_path / "gen"), subjects=5, image_size=32, labeled="1")
    with pytest.raises(DataError, match="arco data phantom --kind mp --out .*gen --subjects 5 --size 32"):
        build_data(cfg)  # loaders never generate
    ensure_phantom(cfg.root, "phantom_mp", True, 5, 0, 32)  # as `arco demo` / `arco study` do
    d = build_data(cfg)
    assert (tmp_path / "gen" / "dataset.json").is_file() and d.spatial_dims == 2 and d.patch_size == (64, 64)
    assert d.channel_names == MP_CHANNELS and d.channel_normalization == ("zscore",) * 3
    assert d.labeled[0]["image"].shape == (3, 64, 64) and d.class_names == ("background", "PZ", "TZ", "lesion")
    assert build_data(DataConfig(dataset="nnunet", root=str(tmp_path / "mp"), labeled="1")).in_channels == 3
    info = inspect_dataset(tmp_path / "mp")
    assert info["layout"] == "phantom_mp" and info["spatial_dims"] == 2 and info["channels"] == list(MP_CHANNELS)


# ---------------------------------------------------------------------------------- predict: cases
def test_collect_cases_groups_channel_files(tmp_path):
    for case in ("a", "b"):
        for c in range(2):
            nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), AFFINE), str(tmp_path / f"{case}_{c:04d}.nii.gz"))
    cases = collect_cases([tmp_path], in_channels=2)
    assert [(c.name, [f.name for f in c.files]) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]),
        ("b", ["b_0000.nii.gz", "b_0001.nii.gz"]),
    ]
    files = [tmp_path / "b_0001.nii.gz", tmp_path / "b_0000.nii.gz"]  # given as files, any order
    assert collect_cases(files, 2)[0].files == (tmp_path / "b_0000.nii.gz", tmp_path / "b_0001.nii.gz")
    assert len(collect_cases([tmp_path], 1)) == 4  # a single-channel model: every file is a case
    with pytest.raises(DataError, match=r"case 'b' .*channel\(s\) 0000 missing"):
        collect_cases([tmp_path / "b_0001.nii.gz"], 2)
    with pytest.raises(DataError, match=r"case 'a' .*too many channels.*found 0002"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), AFFINE), str(tmp_path / "a_0002.nii.gz"))
        collect_cases([tmp_path], 2, ("T2", "ADC"))
    (tmp_path / "a_0002.nii.gz").rename(tmp_path / "scan.nii.gz")
    with pytest.raises(DataError, match=r"scan\.nii\.gz: the model takes 2 channels \(T2, ADC\)"):
        collect_cases([tmp_path], 2, ("T2", "ADC"))


# ------------------------------------------------------------------------------------------ end to end
def test_mpmri_train_evaluate_predict_end_to_end(tmp_path, capsys):
    """phantom_mp (generated) -> `arco train --config mpmri --method supervised` -> evaluate -> export ->
    predict on channel files -> evaluate the files with the dataset.json class names."""
    data, run = tmp_path / "data", tmp_path / "run"
    sets = [
        f"data.root={data}",
        "data.subjects=5",
        "data.image_size=32",
        "data.patch_size=[32, 32]",
        "schedule.iterations=4",
        "engine.val_every=4",
        "engine.progress=false",
    ]
    make_phantom("mpmri", sets)
    assert (
        main(
            [
                "train",
                "--config",
                "mpmri",
                "--method",
                "supervised",
                "--out",
                str(run),
                *sum((["--set", s] for s in sets), []),
            ]
        )
        == 0
    )
    ckpt = torch.load(run / "supervised" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["data"]["in_channels"] == 3 and ckpt["data"]["channel_names"] == list(MP_CHANNELS)
    assert ckpt["data"]["channel_normalization"] == ["zscore"] * 3 and ckpt["predictor"]["kwargs"]["in_channels"] == 3
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "supervised"), "--out", str(tmp_path / "ev")]) == 0
    assert "| lesion |" in capsys.readouterr().out
    nii = tmp_path / "nii"
    assert main(["data", "export", str(data), "--dataset", "phantom_mp", "--out", str(nii)]) == 0
    assert (nii / "images" / "mp_005_0002.nii.gz").is_file()
    pred = tmp_path / "pred"
    assert (
        main(["predict", "--checkpoint", str(run / "supervised"), "--input", str(nii / "images"), "--out", str(pred)])
        == 0
    )
    assert [p.name for p in pred.iterdir()] == ["mp_005.nii.gz"]
    out = nib.load(str(pred / "mp_005.nii.gz"))
    src = nib.load(str(nii / "labels" / "mp_005.nii.gz"))
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    capsys.readouterr()
    args = ["evaluate", "--pred", str(pred), "--gt", str(nii / "labels"), "--labels", str(data / "dataset.json")]
    assert main([*args, "--out", str(tmp_path / "ev2")]) == 0
    assert "| PZ |" in capsys.readouterr().out
    one = ["predict", "--checkpoint", str(run / "supervised"), "--input", str(nii / "images" / "mp_005_0000.nii.gz")]
    assert main([*one, "--out", str(tmp_path / "p2")]) == 2
    assert "channel(s) 0001, 0002 missing" in " ".join(capsys.readouterr().err.split())
