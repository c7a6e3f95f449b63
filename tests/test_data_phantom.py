"""Phantoms: determinism under a seed, content, on-disk layouts, CLI."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from arco._checks import DataError
from arco.cli import main
from arco.data import DataConfig, build_data
from arco.data.phantom import (
    ensure_phantom,
    generate_phantom2d,
    generate_phantom3d,
    phantom2d_subject,
    phantom3d_subject,
)


def test_phantom2d_subject_deterministic_and_seed_dependent():
    a_img, a_lab = phantom2d_subject(seed=1, index=2, size=64)
    b_img, b_lab = phantom2d_subject(seed=1, index=2, size=64)
    c_img, _ = phantom2d_subject(seed=2, index=2, size=64)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_phantom2d_content():
    img, lab = phantom2d_subject(0, 0, 128)
    assert img.dtype == np.float32 and lab.dtype == np.uint8
    assert 8 <= img.shape[0] <= 10 and img.shape[1:] == (128, 128)
    assert img.min() == 0.0 and img.max() == 1.0
    freq = np.bincount(lab.ravel(), minlength=4) / lab.size
    assert freq[0] > 0.85 and all(0.002 < f < 0.06 for f in freq[1:])  # long tail
    lv = (lab == 3).sum(axis=(1, 2))
    assert lv[0] > lv[-1] > 0  # LV shrinks toward the apex
    # the blood pools are both bright: RV and LV mean intensities within 30 % of each other
    rv_mean, lv_mean = img[lab == 1].mean(), img[lab == 3].mean()
    assert abs(rv_mean - lv_mean) / lv_mean < 0.3


def test_phantom2d_some_apical_slices_without_rv():
    has_rv = [(phantom2d_subject(0, i, 64)[1] == 1).any(axis=(1, 2)) for i in range(6)]
    assert any(not h[-1] for h in has_rv) and all(h[0] for h in has_rv)


def test_phantom3d_subject():
    img, lab = phantom3d_subject(0, 0, 32)
    img2, lab2 = phantom3d_subject(0, 0, 32)
    np.testing.assert_array_equal(img, img2)
    assert img.shape == (24, 32, 32) and set(np.unique(lab)) == {0, 1}
    assert abs(img.mean()) < 1e-3 and abs(img.std() - 1) < 1e-3  # z-scored
    assert 0.005 < lab.mean() < 0.2


def test_generate_phantom2d_layout(tmp_path):
    info = generate_phantom2d(tmp_path / "p", subjects=10, seed=3, size=32)
    root = tmp_path / "p"
    train = (root / "train.list").read_text().split()
    val, test = (root / "val.list").read_text().split(), (root / "test.list").read_text().split()
    assert (len(train), len(val), len(test)) == (7, 1, 2) == (info["train"], info["val"], info["test"])
    slices = (root / "train_slices.list").read_text().split()
    assert len(slices) == info["train_slices"] and slices[0] == "case001_slice_0"
    with h5py.File(root / "data" / "slices" / f"{slices[0]}.h5") as fh:
        assert fh["image"].shape == (32, 32) and fh["label"].dtype == np.uint8
    with h5py.File(root / "data" / f"{test[0]}.h5") as fh:
        assert fh["image"].ndim == 3 and fh["image"].shape[1:] == (32, 32)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_phantom2d(root, subjects=10, seed=3, size=32)


def test_generate_phantom_deterministic_on_disk(tmp_path):
    generate_phantom2d(tmp_path / "a", subjects=4, seed=5, size=32)
    generate_phantom2d(tmp_path / "b", subjects=4, seed=5, size=32)
    with h5py.File(tmp_path / "a/data/case004.h5") as fa, h5py.File(tmp_path / "b/data/case004.h5") as fb:
        np.testing.assert_array_equal(fa["image"][()], fb["image"][()])


def test_generate_phantom3d_layout_ua_mt_axis_order(tmp_path):
    generate_phantom3d(tmp_path / "p", subjects=5, seed=0, size=32)
    train = (tmp_path / "p/train.list").read_text().split()
    assert len(train) == 4 and len((tmp_path / "p/test.list").read_text().split()) == 1
    with h5py.File(tmp_path / "p" / train[0] / "mri_norm2.h5") as fh:
        assert fh["image"].shape == (32, 32, 24)  # (X, Y, Z) as UA-MT stores it


def test_loaders_never_generate_only_ensure_phantom_does(tmp_path):
    # A missing root is an error that gives the command making it; nothing is created there.
    cfg = DataConfig(
        dataset="phantom2d",
        root=str(tmp_path / "gen"),
        subjects=4,
        image_size=32,
        labeled="1",
        patch_size=(32, 32),
    )
    with pytest.raises(DataError, match=r"arco data phantom --kind 2d --out \S*gen --subjects 4 --size 32"):
        build_data(cfg)
    assert not (tmp_path / "gen").exists()
    ensure_phantom(cfg.root, "phantom2d", True, 4, 0, 32)  # what `arco demo` and `arco study` call
    data = build_data(cfg)
    assert (tmp_path / "gen" / "train_slices.list").is_file()
    assert data.spatial_dims == 2 and data.num_classes == 4 and data.class_names[1] == "RV"
    cfg3 = DataConfig(
        dataset="phantom3d",
        root=str(tmp_path / "g3"),
        subjects=4,
        image_size=32,
        labeled="1",
        patch_size=(16, 16, 16),
    )
    with pytest.raises(DataError, match="no phantom3d dataset"):
        build_data(cfg3)
    ensure_phantom(cfg3.root, "phantom3d", True, 4, 0, 32)
    d3 = build_data(cfg3)
    assert d3.labeled[0]["image"].shape == (1, 16, 16, 16)


def test_cli_phantom(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "phantom",
                "--kind",
                "3d",
                "--out",
                str(tmp_path / "p"),
                "--subjects",
                "3",
                "--size",
                "32",
            ]
        )
        == 0
    )
    assert "phantom3d" in capsys.readouterr().out
    assert main(["data", "phantom", "--kind", "2d", "--out", str(tmp_path / "p"), "--subjects", "3"]) != 0
    assert "overwrite" in capsys.readouterr().err


def test_a_subjects_setting_the_phantom_on_disk_ignores_is_named(tmp_path, caplog):
    generate_phantom2d(tmp_path / "p", subjects=5, seed=0, size=32)
    cfg = DataConfig(dataset="phantom2d", root=str(tmp_path / "p"), subjects=9, labeled="1", patch_size=(32, 32))
    with caplog.at_level("WARNING"):
        build_data(cfg)
    assert "data.subjects=9 is ignored" in caplog.text and "has 5 subjects" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        build_data(DataConfig(dataset="phantom2d", root=str(tmp_path / "p"), labeled="1", patch_size=(32, 32)))
    assert "data.subjects" not in caplog.text  # the default is not a setting
