"""Left atrium (2018 LA challenge) in the UA-MT layout (also used by ``phantom3d``).

``<root>/train.list``, ``<root>/test.list`` and ``<case>/mri_norm2.h5`` (``image`` z-scored, ``label`` 0/1,
stored
(X, Y, Z) and read as (Z, Y, X) = (D, H, W)); case folders directly in ``root`` or in
``root/2018LA_Seg_Training Set`` (the UA-MT download). LA has no val list: the reference code validates on the
test
cases; we hold out the last ``val_fraction`` of ``train.list`` instead (never test), and labeled cases are the
first N of ``train.list`` (UA-MT: 1/4/8 ... = first rows).
"""

from __future__ import annotations

from pathlib import Path

from arco._checks import ConfigError, DataError, path_problem
from arco.data.build import DATASETS, SegmentationData, assemble, check_classes, check_dims, resolve_patch
from arco.data.config import DataConfig
from arco.data.io import check_image, check_label, read_h5, read_list
from arco.data.splits import check_rule, holdout, select_labeled
from arco.data.volume import Volume, normalize

__all__ = ["load_la_layout", "LA_CLASSES"]

LA_CLASSES = ("background", "LA")
_SUBDIR = "2018LA_Seg_Training Set"


def _case_path(root: Path, entry: str) -> tuple[str, Path]:
    case = entry.split("/")[0] if entry.endswith("mri_norm2.h5") else entry
    for base in (root, root / _SUBDIR):
        if (base / case).is_dir():
            return case, base / case / "mri_norm2.h5"
    return case, root / case / "mri_norm2.h5"


def load_la_layout(cfg: DataConfig, name: str, class_names=LA_CLASSES) -> SegmentationData:
    root = Path(cfg.root)
    if not cfg.root or not root.is_dir():
        raise DataError(f"dataset '{name}': folder {root} not found; set data.root to the folder with train.list")
    dims = check_dims(name, 3, cfg)
    n_cls = check_classes(name, class_names, cfg)
    patch = resolve_patch(cfg, dims, (32, 48, 48) if name == "phantom3d" else (80, 112, 112))
    norm = cfg.normalization or "none"
    if check_rule(cfg.split_rule) == "ssl4mis":
        raise ConfigError("data.split_rule='ssl4mis' applies to ACDC-layout datasets only; use 'patients'")
    vols: dict[str, Volume] = {}
    lists = {}
    for lst in ("train.list", "test.list"):
        lists[lst] = []
        for entry in read_list(root / lst):
            case, path = _case_path(root, entry)
            if not path.is_file():
                raise DataError(f"{root / lst} names case '{case}' but {path} {path_problem(path)}")
            d = read_h5(path, transpose=True)
            img = check_image(d["image"], path, 3)
            lab = check_label(d["label"], img.shape, path, n_cls)
            vols[case] = Volume(case, normalize(img, norm), lab.astype("uint8"), None, None, str(path))
            lists[lst].append(case)
    train, val = holdout(lists["train.list"], cfg.val_fraction if len(lists["train.list"]) > 1 else 0.0)
    lab_cases = select_labeled(train, cfg.labeled, str(root / "train.list"))
    unl_cases = [c for c in train if c not in set(lab_cases)]

    def as_eval(c: str) -> Volume:
        v = vols[c]
        return Volume(c, v.image, v.label.astype("int64"), v.spacing, v.affine, v.source)

    split = {"labeled": lab_cases, "unlabeled": unl_cases, "val_rule": "last cases of train.list"}
    return assemble(
        cfg,
        name,
        dims,
        class_names,
        norm,
        patch,
        ([vols[c].image for c in lab_cases], [vols[c].label for c in lab_cases], lab_cases),
        ([vols[c].image for c in unl_cases], unl_cases),
        [as_eval(c) for c in val],
        [as_eval(c) for c in lists["test.list"]],
        split,
    )


@DATASETS.register("la")
def build_la(cfg: DataConfig) -> SegmentationData:
    return load_la_layout(cfg, "la")


@DATASETS.register("phantom3d")
def build_phantom3d(cfg: DataConfig) -> SegmentationData:
    from arco.data.phantom import require_phantom

    require_phantom(cfg.root, "phantom3d", cfg.subjects, cfg.seed, cfg.image_size)
    return load_la_layout(cfg, "phantom3d")
