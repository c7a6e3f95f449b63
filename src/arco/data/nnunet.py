"""nnU-Net v2 raw folders (``dataset.json``, ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``,
optional
``imagesTs/`` + ``labelsTs/``), as 2D slices (axis 0 of (Z, Y, X), resized to the network size) or 3D patches;
presets ``lits`` (CT window [-200, 250] HU -> [0, 1], 2D 256x256) and ``mmwhs`` (z-score, 2D 256x256).

Splits: test = ``imagesTs`` cases when ``labelsTs`` exists, else ``test_fraction`` of the training cases; val
    =
``val_fraction`` of the rest; both drawn with ``split_seed``. Labeled = the first N training cases in the same
seeded
order (or the listed ids). Volumes are held in memory (downsample very large CT sets beforehand).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arco._checks import ConfigError, DataError
from arco.data.build import DATASETS, SegmentationData, assemble, check_classes, check_dims, resolve_patch
from arco.data.config import DataConfig
from arco.data.io import check_label, read_nifti, read_scan
from arco.data.splits import check_rule, holdout, select_labeled
from arco.data.volume import Volume

__all__ = ["read_dataset_json", "load_nnunet", "nnunet_cases"]


def read_dataset_json(root: Path) -> tuple[dict, tuple[str, ...]]:
    """Read and check ``dataset.json``; return it and the class names ordered by label value."""
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; an nnU-Net raw folder needs dataset.json (see nnU-Net v2 docs)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    channels = meta.get("channel_names", meta.get("modality", {"0": "image"}))
    if len(channels) != 1:
        raise DataError(f"{path}: {len(channels)} input channels {channels}; arco supports single-channel images")
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f'{path}: missing \'labels\' mapping (e.g. {{"background": 0, "liver": 1}})')
    if any(not isinstance(v, int) for v in labels.values()):
        raise DataError(f"{path}: 'labels' values must be integers (region-based labels are not supported)")
    by_value = sorted(labels.items(), key=lambda kv: kv[1])
    if [v for _, v in by_value] != list(range(len(by_value))):
        raise DataError(f"{path}: label values {[v for _, v in by_value]} must be 0..C-1 without gaps")
    return meta, tuple(k for k, _ in by_value)


def nnunet_cases(root: Path, images: str, labels: str | None, ending: str) -> dict[str, tuple[Path, Path | None]]:
    """Map case id -> (image path, label path) for ``<root>/<images>/*_0000<ending>``."""
    img_dir = root / images
    files = sorted(img_dir.glob(f"*_0000{ending}"))
    cases = {f.name[: -len(f"_0000{ending}")]: f for f in files}
    out: dict[str, tuple[Path, Path | None]] = {}
    lab_dir = root / labels if labels else None
    for case, f in cases.items():
        lab = None
        if lab_dir is not None:
            lab = lab_dir / f"{case}{ending}"
            if not lab.is_file():
                raise DataError(f"{f}: no label {lab}; every image in {images} needs a label in {labels}")
        out[case] = (f, lab)
    if lab_dir is not None and lab_dir.is_dir():
        orphans = sorted({p.name[: -len(ending)] for p in lab_dir.glob(f"*{ending}")} - set(cases))
        if orphans:
            raise DataError(f"{lab_dir}: label(s) {orphans[:5]} have no image {images}/<case>_0000{ending}")
    return out


def _read_case(case: str, img_path: Path, lab_path: Path, n_cls: int, norm: str, window) -> Volume:
    vol = read_scan(img_path, norm, ct_window=window)
    vol.case_id = case
    data, affine, _ = read_nifti(lab_path)
    if data.ndim == 2:
        data = data[None]
    label = check_label(data, vol.image.shape, lab_path, n_cls)
    if not np.allclose(affine, vol.affine, atol=1e-3, rtol=1e-4):
        raise DataError(f"{lab_path}: affine differs from its image {img_path}; the label must be on the image grid")
    vol.label = label
    return vol


def load_nnunet(
    cfg: DataConfig,
    name: str,
    default_dims=(3, 2),
    default_norm="zscore",
    patch2d=(256, 256),
    expected_classes: int | None = None,
) -> SegmentationData:
    root = Path(cfg.root)
    if not cfg.root or not root.is_dir():
        raise DataError(f"dataset '{name}': folder {root} not found; set data.root to the nnU-Net raw folder")
    meta, class_names = read_dataset_json(root)
    if expected_classes is not None and len(class_names) != expected_classes:
        raise DataError(
            f"{root / 'dataset.json'}: {len(class_names)} classes {list(class_names)}, but the '{name}' "
            f"preset expects {expected_classes}; use dataset 'nnunet' for other label maps"
        )
    n_cls = check_classes(name, class_names, cfg)
    if check_rule(cfg.split_rule) == "ssl4mis":
        raise ConfigError("data.split_rule='ssl4mis' applies to ACDC-layout datasets only; use 'patients'")
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii"):
        raise DataError(f"{root / 'dataset.json'}: file_ending {ending!r} is not supported (NIfTI only)")
    if not (root / "imagesTr").is_dir() or not (root / "labelsTr").is_dir():
        raise DataError(f"{root}: imagesTr/ and labelsTr/ are required in an nnU-Net raw folder")
    tr = nnunet_cases(root, "imagesTr", "labelsTr", ending)
    if not tr:
        raise DataError(f"{root / 'imagesTr'}: no images named <case>_0000{ending}")
    if "numTraining" in meta and int(meta["numTraining"]) != len(tr):
        raise DataError(
            f"{root / 'dataset.json'}: numTraining={meta['numTraining']} but imagesTr has {len(tr)} "
            "cases; fix numTraining or the folder"
        )
    ts = nnunet_cases(root, "imagesTs", "labelsTs", ending) if (root / "labelsTs").is_dir() else {}
    norm = cfg.normalization or default_norm
    vols = {c: _read_case(c, i, lab, n_cls, norm, cfg.ct_window) for c, (i, lab) in {**tr, **ts}.items()}
    flat = all(v.image.shape[0] == 1 for v in vols.values())
    dims = check_dims(name, (2,) if flat else default_dims, cfg)
    patch = resolve_patch(cfg, dims, patch2d if dims == 2 else (64, 128, 128))
    order = sorted(tr)
    if ts:
        test = sorted(ts)
    else:
        order, test = holdout(order, cfg.test_fraction, seed=cfg.split_seed)
    order = [order[i] for i in np.random.default_rng(cfg.split_seed + 1).permutation(len(order))]
    train, val = holdout(order, cfg.val_fraction if len(order) > 1 else 0.0)
    lab_cases = select_labeled(train, cfg.labeled, str(root / "imagesTr"))
    unl_cases = [c for c in train if c not in set(lab_cases)]
    if dims == 2:

        def items(cases, with_label):
            imgs = [s for c in cases for s in vols[c].image]
            labs = [s.astype(np.uint8 if n_cls < 256 else np.int16) for c in cases for s in vols[c].label]
            ids = [f"{c}_slice_{k}" for c in cases for k in range(vols[c].image.shape[0])]
            return (imgs, labs, ids) if with_label else (imgs, ids)
    else:

        def items(cases, with_label):
            imgs, ids = [vols[c].image for c in cases], list(cases)
            return (imgs, [vols[c].label for c in cases], ids) if with_label else (imgs, ids)

    split = {
        "labeled": lab_cases,
        "unlabeled": unl_cases,
        "split_seed": cfg.split_seed,
        "test_from": "imagesTs" if ts else "imagesTr",
    }
    return assemble(
        cfg,
        name,
        dims,
        class_names,
        norm,
        patch,
        items(lab_cases, True),
        items(unl_cases, False),
        [vols[c] for c in val],
        [vols[c] for c in test],
        split,
    )


@DATASETS.register("nnunet")
def build_nnunet(cfg: DataConfig) -> SegmentationData:
    return load_nnunet(cfg, "nnunet")


@DATASETS.register("lits")
def build_lits(cfg: DataConfig) -> SegmentationData:
    return load_nnunet(cfg, "lits", default_dims=(2, 3), default_norm="ct", expected_classes=3)


@DATASETS.register("mmwhs")
def build_mmwhs(cfg: DataConfig) -> SegmentationData:
    return load_nnunet(cfg, "mmwhs", default_dims=(2, 3), default_norm="zscore", expected_classes=8)
