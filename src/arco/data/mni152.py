"""``mni152``: a real-MRI demo (one brain, 4 classes) from the MNI152 2009 templates shipped in the nilearn
wheel.

Labels: background 0, CSF 1, GM 2, WM 3. The wheel has no brain mask, so it is derived: GM+WM probability >
    0.3,
holes filled (ventricles), dilated by 2 voxels (sulcal CSF). Within the mask CSF probability = 1 - GM - WM
(clipped)
and each voxel takes the most probable of CSF/GM/WM. The volume (Z, Y, X), 1 mm, is cut into contiguous axial
blocks cycling train (14 slices), val (3), test (4) with a one-slice gap after each block; every block is one
"case" (labeled = the first N train blocks in a ``split_seed`` order).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from arco._checks import ConfigError, DataError
from arco.data.build import DATASETS, SegmentationData, assemble, check_classes, check_dims, resolve_patch
from arco.data.config import DataConfig
from arco.data.io import check_image, read_nifti
from arco.data.splits import check_rule, select_labeled
from arco.data.volume import Volume, normalize

__all__ = ["mni152_files", "mni152_volume", "MNI152_CLASSES"]

MNI152_CLASSES = ("background", "CSF", "GM", "WM")
_BLOCKS = (("train", 14), ("val", 3), ("test", 4))
_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def mni152_files() -> dict[str, Path]:
    """Paths of the T1/GM/WM templates inside the installed nilearn package (nilearn itself is not
    imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.origin:
        raise DataError("dataset 'mni152' needs the nilearn package for its MNI152 files; pip install arco[mni]")
    base = Path(spec.origin).parent / "datasets" / "data"
    files = {k: base / _NAME.format(k) for k in ("t1", "gm", "wm")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"MNI152 template(s) missing from the nilearn install: {missing}; reinstall nilearn")
    return files


def mni152_volume() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...], str]:
    """Return ``(t1 (Z, Y, X) float32, label int64, affine, spacing, source)``."""
    from scipy import ndimage as ndi

    files = mni152_files()
    t1, affine, spacing = read_nifti(files["t1"])
    gm = read_nifti(files["gm"])[0].astype(np.float32) / 255.0
    wm = read_nifti(files["wm"])[0].astype(np.float32) / 255.0
    mask = ndi.binary_fill_holes(gm + wm > 0.3)
    mask = ndi.binary_dilation(mask, ndi.generate_binary_structure(3, 1), iterations=2)
    csf = np.clip(1.0 - gm - wm, 0, 1) * mask
    label = np.where(mask, 1 + np.argmax(np.stack([csf, gm, wm]), axis=0), 0).astype(np.int64)
    return check_image(t1, files["t1"], 3), label, affine, spacing, str(files["t1"])


@DATASETS.register("mni152")
def build_mni152(cfg: DataConfig) -> SegmentationData:
    name = "mni152"
    dims = check_dims(name, 2, cfg)
    check_classes(name, MNI152_CLASSES, cfg)
    patch = resolve_patch(cfg, dims, (128, 128))
    norm = cfg.normalization or "minmax"
    if check_rule(cfg.split_rule) == "ssl4mis":
        raise ConfigError("data.split_rule='ssl4mis' applies to ACDC-layout datasets only; use 'patients'")
    t1, label, affine, spacing, source = mni152_volume()
    image = normalize(t1, norm, cfg.ct_window)
    rows = np.flatnonzero((label > 0).mean(axis=(1, 2)) > 0.01)
    z, z_end = int(rows[0]), int(rows[-1]) + 1
    blocks: dict[str, list[tuple[str, int, int]]] = {"train": [], "val": [], "test": []}
    while z < z_end:
        for part, n in _BLOCKS:
            a, b = z, min(z + n, z_end)
            if b > a:
                blocks[part].append((f"mni152_z{a:03d}-{b - 1:03d}", a, b))
            z = b + 1
    cases = {cid: (a, b) for part in blocks.values() for cid, a, b in part}

    def vol(cid: str) -> Volume:
        a, b = cases[cid]
        block_affine = affine.copy()
        block_affine[:3, 3] += affine[:3, 2] * a  # array axis 0 is nibabel axis 2
        return Volume(cid, image[a:b], label[a:b], spacing, block_affine, source)

    train = [c for c, _, _ in blocks["train"]]
    train = [train[i] for i in np.random.default_rng(cfg.split_seed).permutation(len(train))]
    lab_cases = select_labeled(train, cfg.labeled, "mni152 train blocks")
    unl_cases = [c for c in train if c not in set(lab_cases)]

    def items(cs):
        return (
            [s for c in cs for s in vol(c).image],
            [s.astype(np.uint8) for c in cs for s in vol(c).label],
            [f"{c}_slice_{k}" for c in cs for k in range(cases[c][1] - cases[c][0])],
        )

    li, ll, lid = items(lab_cases)
    ui, _, uid = items(unl_cases)
    split = {
        "labeled": lab_cases,
        "unlabeled": unl_cases,
        "blocks": {p: [c for c, _, _ in v] for p, v in blocks.items()},
    }
    return assemble(
        cfg,
        name,
        dims,
        MNI152_CLASSES,
        norm,
        patch,
        (li, ll, lid),
        (ui, uid),
        [vol(c) for c, _, _ in blocks["val"]],
        [vol(c) for c, _, _ in blocks["test"]],
        split,
    )
