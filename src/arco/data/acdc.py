"""ACDC in the SSL4MIS layout (also used by ``phantom2d``).

``<root>/data/slices/<slice_id>.h5`` (training slices, ``image`` in [0, 1], ``label`` 0 bg, 1 RV, 2 Myo, 3
LV),
``<root>/data/<case>.h5`` (val/test volumes, slices first), ``train_slices.list``, ``val.list``, ``test.list``
(``train.list`` optional). Labeled patients are the first ones in ``train_slices.list`` order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arco._checks import ConfigError, DataError, path_problem
from arco.data.build import DATASETS, SegmentationData, assemble, check_classes, check_dims, resolve_patch
from arco.data.config import DataConfig
from arco.data.io import check_image, check_label, read_h5, read_list
from arco.data.splits import check_rule, parse_labeled, patient_of, select_labeled, ssl4mis_rows
from arco.data.volume import Volume, normalize

__all__ = ["load_acdc_layout", "ACDC_CLASSES"]

ACDC_CLASSES = ("background", "RV", "Myo", "LV")


def _strip(i: str) -> str:
    return i[:-3] if i.endswith(".h5") else i


def _norm_slices(image: np.ndarray, method: str) -> np.ndarray:
    """Normalise slice by slice, so that val/test volumes match the 2D training slices."""
    if method == "none":
        return image
    return np.stack([normalize(s, method) for s in image])


def read_volume_h5(path: Path, case: str, num_classes: int, normalization: str) -> Volume:
    d = read_h5(path)
    image = check_image(d["image"], path, 3)
    label = check_label(d["label"], image.shape, path, num_classes)
    return Volume(case, _norm_slices(image, normalization), label, None, None, str(path))


def load_acdc_layout(cfg: DataConfig, name: str, class_names=ACDC_CLASSES) -> SegmentationData:
    """Load an SSL4MIS-layout folder (see module docstring) into `SegmentationData`."""
    root = Path(cfg.root)
    if not cfg.root or not root.is_dir():
        raise DataError(
            f"dataset '{name}': folder {root} not found; set data.root to the ACDC folder "
            "(containing data/ and train_slices.list)"
        )
    dims = check_dims(name, 2, cfg)
    n_cls = check_classes(name, class_names, cfg)
    patch = resolve_patch(cfg, dims, (128, 128) if name == "phantom2d" else (256, 256))
    norm = cfg.normalization or "none"
    rule = check_rule(cfg.split_rule)
    slice_ids = [_strip(i) for i in read_list(root / "train_slices.list")]
    val_ids = [_strip(i) for i in read_list(root / "val.list")]
    test_ids = [_strip(i) for i in read_list(root / "test.list")]
    patients = list(dict.fromkeys(patient_of(s) for s in slice_ids))
    if rule == "ssl4mis":
        kind, count = parse_labeled(cfg.labeled)
        if kind != "count":
            raise ConfigError(f"data.split_rule='ssl4mis' needs data.labeled as a patient count, got {cfg.labeled!r}")
        rows = ssl4mis_rows(slice_ids, count, acdc=name == "acdc")
        lab_ids, unl_ids = slice_ids[:rows], slice_ids[rows:]
        lab_patients = list(dict.fromkeys(patient_of(s) for s in lab_ids))
    else:
        lab_patients = select_labeled(patients, cfg.labeled, str(root / "train_slices.list"))
        keep = set(lab_patients)
        lab_ids = [s for s in slice_ids if patient_of(s) in keep]
        unl_ids = [s for s in slice_ids if patient_of(s) not in keep]
    images, labels = {}, {}
    for sid in slice_ids:
        path = root / "data" / "slices" / f"{sid}.h5"
        if not path.is_file():
            raise DataError(f"{root / 'train_slices.list'} names slice '{sid}' but {path} {path_problem(path)}")
        d = read_h5(path)
        img = check_image(d["image"], path, 2)
        labels[sid] = check_label(d["label"], img.shape, path, n_cls).astype(np.uint8)
        images[sid] = normalize(img, norm)
    vols = {}
    for lst, ids in (("val.list", val_ids), ("test.list", test_ids)):
        for case in ids:
            path = root / "data" / f"{case}.h5"
            if not path.is_file():
                raise DataError(f"{root / lst} names case '{case}' but {path} {path_problem(path)}")
            vols[case] = read_volume_h5(path, case, n_cls, norm)
    split = {
        "labeled": lab_patients,
        "unlabeled": [p for p in patients if p not in set(lab_patients)],
        "labeled_slices": len(lab_ids),
        "partial_patient": rule == "ssl4mis" and any(patient_of(s) in set(lab_patients) for s in unl_ids),
    }
    return assemble(
        cfg,
        name,
        dims,
        class_names,
        norm,
        patch,
        ([images[i] for i in lab_ids], [labels[i] for i in lab_ids], lab_ids),
        ([images[i] for i in unl_ids], unl_ids),
        [vols[c] for c in val_ids],
        [vols[c] for c in test_ids],
        split,
    )


@DATASETS.register("acdc")
def build_acdc(cfg: DataConfig) -> SegmentationData:
    return load_acdc_layout(cfg, "acdc")


@DATASETS.register("phantom2d")
def build_phantom2d(cfg: DataConfig) -> SegmentationData:
    from arco.data.phantom import require_phantom

    require_phantom(cfg.root, "phantom2d", cfg.subjects, cfg.seed, cfg.image_size)
    return load_acdc_layout(cfg, "phantom2d")
