"""nnU-Net v2 raw folders (``dataset.json``, ``imagesTr/<case>_0000<ending>``, ``_0001``, ... one file per
channel, ``labelsTr/<case><ending>``, optional ``imagesTs/`` + ``labelsTs/``), as 2D slices (axis 0 of
(Z, Y, X), resized to the network size) or 3D patches. ``file_ending`` may be ``.nii.gz``, ``.nii``,
``.nrrd``, ``.mha`` or ``.mhd``. Presets ``lits`` (CT window [-200, 250] HU -> [0, 1], 2D 256x256),
``mmwhs`` (z-score, 2D 256x256) and ``phantom_mp`` (the built-in multi-parametric MRI phantom, generated on
demand).

Channels: ``channel_names`` (or ``modality``) sets the number of channels and, unless ``data.normalization``
says otherwise, each channel's normalisation the way nnU-Net picks it (``CT`` -> the CT window, ``noNorm``
-> none, ``rescale_to_0_1`` -> min-max, anything else -> z-score per case).

Splits: test = ``imagesTs`` cases when ``labelsTs`` exists, else ``test_fraction`` of the training cases;
val = ``val_fraction`` of the rest; both drawn with ``split_seed``. Labeled = the first N training cases in
the same seeded order (or the listed ids). Volumes are held in memory (downsample very large CT sets
beforehand).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arco._checks import ConfigError, DataError, path_problem
from arco.data.build import DATASETS, SegmentationData, assemble, check_classes, check_dims, resolve_patch
from arco.data.config import DataConfig
from arco.data.formats import IMAGE_SUFFIXES, image_suffix
from arco.data.io import check_label, read_image, read_scan
from arco.data.splits import check_rule, holdout, select_labeled
from arco.data.volume import Volume, resolve_normalization

__all__ = ["read_dataset_json", "channel_names_of", "load_nnunet", "nnunet_cases"]


#: dataset.json keys arco reads or passes on, with the JSON form each must have (nnU-Net v2 / MSD).
_JSON_FORMS: dict[str, tuple[str, str]] = {
    "name": ("str", "a string"),
    "description": ("str", "a string"),
    "reference": ("str", "a string"),
    "licence": ("str", "a string"),
    "release": ("str", "a string"),
    "tensorImageSize": ("str", 'a string such as "3D"'),
    "file_ending": ("str", 'a string such as ".nii.gz"'),
    "overwrite_image_reader_writer": ("str", "a string"),
    "numTraining": ("int", "a whole number (the count of training cases), e.g. 6"),
    "numTest": ("int", "a whole number (the count of test cases), e.g. 0"),
    "labels": ("dict", 'a mapping of class name to value, e.g. {"background": 0, "liver": 1}'),
    "channel_names": ("dict", 'a mapping of channel index to name, e.g. {"0": "CT"}'),
    "modality": ("dict", 'a mapping of channel index to name, e.g. {"0": "MRI"}'),
    "training": ("list", "a list of {image, label} entries"),
    "test": ("list", "a list of image paths"),
}


def _check_json_forms(meta: dict, path: Path) -> None:
    """Every known key of ``dataset.json`` has its JSON form (names key, file and the expected form)."""
    for key, (kind, form) in _JSON_FORMS.items():
        if key not in meta:
            continue
        value = meta[key]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "dict": isinstance(value, dict),
            "list": isinstance(value, list),
        }[kind]
        if not ok:
            raise DataError(
                f"{path}: key {key!r} must be {form}, got {type(value).__name__} {json.dumps(value)[:60]}; fix "
                "dataset.json"
            )
    for name, value in meta.get("channel_names", meta.get("modality", {})).items():
        if not isinstance(value, str) or not value:
            key = "channel_names" if "channel_names" in meta else "modality"
            raise DataError(f"{path}: {key}[{name!r}] must be a channel name (a string), got {value!r}")


def read_dataset_json(root: Path) -> tuple[dict, tuple[str, ...]]:
    """Read and check ``dataset.json`` (every known key's type, the label map); return it and the class names
    ordered by label value."""
    from arco._io import read_text

    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path} {path_problem(path)}; an nnU-Net raw folder needs dataset.json (see nnU-Net v2 docs)")
    try:
        meta = json.loads(read_text(path, "dataset file", DataError, "give a JSON dataset.json"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with 'channel_names', 'labels', 'file_ending'")
    _check_json_forms(meta, path)
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f'{path}: missing \'labels\' mapping (e.g. {{"background": 0, "liver": 1}})')
    if any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise DataError(
            f"{path}: 'labels' values must be integers (region-based labels are not supported); an MSD-style "
            '\'labels\' ({"0": "background"}) folder converts with `arco data convert msd`'
        )
    by_value = sorted(labels.items(), key=lambda kv: kv[1])
    if [v for _, v in by_value] != list(range(len(by_value))):
        raise DataError(f"{path}: label values {[v for _, v in by_value]} must be 0..C-1 without gaps")
    return meta, tuple(k for k, _ in by_value)


def channel_names_of(meta: dict, path: Path) -> tuple[str, ...]:
    """Channel names ordered by index from ``channel_names`` (nnU-Net v2) or ``modality`` (v1 / MSD)."""
    channels = meta.get("channel_names", meta.get("modality", {"0": "image"}))
    try:
        order = sorted((int(k), str(v)) for k, v in dict(channels).items())
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'channel_names' must map '0', '1', ... to names, got {channels!r}") from exc
    if not order or [k for k, _ in order] != list(range(len(order))):
        raise DataError(f"{path}: 'channel_names' keys must be 0..C-1 without gaps, got {channels!r}")
    return tuple(v for _, v in order)


def nnunet_cases(
    root: Path, images: str, labels: str | None, ending: str, channels: int = 1
) -> dict[str, tuple[list[Path], Path | None]]:
    """Map case id -> (channel files ``<case>_0000<ending>``, ..., label path) for ``<root>/<images>``."""
    img_dir = root / images
    files = sorted(f for f in img_dir.glob(f"*_0000{ending}") if not f.name.startswith("."))
    out: dict[str, tuple[list[Path], Path | None]] = {}
    lab_dir = root / labels if labels else None
    for f in files:
        case = f.name[: -len(f"_0000{ending}")]
        chans = [img_dir / f"{case}_{i:04d}{ending}" for i in range(channels)]
        missing = [c for c in chans if not c.is_file()]
        if missing and missing[0].is_symlink():
            raise DataError(f"{missing[0]} {path_problem(missing[0])}")
        if missing:
            raise DataError(
                f"{missing[0]}: missing; dataset.json declares {channels} channels, so every case needs "
                f"{case}_0000{ending} .. {case}_{channels - 1:04d}{ending}"
            )
        extra = img_dir / f"{case}_{channels:04d}{ending}"
        if extra.is_file():
            raise DataError(
                f"{extra}: a channel beyond the {channels} declared in dataset.json 'channel_names'; add it "
                "there or remove the file"
            )
        lab = None
        if lab_dir is not None:
            lab = lab_dir / f"{case}{ending}"
            if not lab.is_file():
                why = path_problem(lab)
                why = "" if why == "does not exist" else f" (it {why})"
                raise DataError(f"{f}: no label {lab}{why}; every image in {images} needs a label in {labels}")
        out[case] = (chans, lab)
    if lab_dir is not None and lab_dir.is_dir():
        found = {p.name[: -len(ending)] for p in lab_dir.glob(f"*{ending}") if not p.name.startswith(".")}
        orphans = sorted(found - set(out))
        if orphans:
            raise DataError(f"{lab_dir}: label(s) {orphans[:5]} have no image {images}/<case>_0000{ending}")
    return out


def _read_case(case: str, paths: list[Path], lab_path: Path, n_cls: int, schemes, window) -> Volume:
    vol = read_scan(paths, schemes, ct_window=window)
    vol.case_id = case
    data, affine, _ = read_image(lab_path)
    if data.ndim == 2:
        data = data[None]
    label = check_label(data, vol.shape, lab_path, n_cls)
    if not np.allclose(affine, vol.affine, atol=1e-3, rtol=1e-4):
        raise DataError(f"{lab_path}: affine differs from its image {paths[0]}; the label must be on the image grid")
    vol.label = label
    return vol


def _slices(image: np.ndarray) -> list[np.ndarray]:
    """2D training items of a volume: ``image[k]`` (one channel) or ``image[:, k]`` ((C, H, W))."""
    return list(image) if image.ndim == 3 else [image[:, k] for k in range(image.shape[1])]


def _folder_cases(root: Path, meta: dict, channel_names: tuple[str, ...]) -> tuple[dict, dict]:
    """Training and (labelled) test cases of the folder, checked against ``dataset.json``."""
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in IMAGE_SUFFIXES:
        raise DataError(
            f"{root / 'dataset.json'}: file_ending {ending!r} is not supported; use one of {', '.join(IMAGE_SUFFIXES)}"
        )
    if not (root / "imagesTr").is_dir() or not (root / "labelsTr").is_dir():
        raise DataError(f"{root}: imagesTr/ and labelsTr/ are required in an nnU-Net raw folder")
    tr = nnunet_cases(root, "imagesTr", "labelsTr", ending, len(channel_names))
    if not tr:
        others = sorted({image_suffix(p) for p in (root / "imagesTr").glob("*_0000.*") if image_suffix(p)})
        hint = f" (found {', '.join(others)} files: set file_ending in dataset.json)" if others else ""
        raise DataError(f"{root / 'imagesTr'}: no images named <case>_0000{ending}{hint}")
    if "numTraining" in meta and int(meta["numTraining"]) != len(tr):
        raise DataError(
            f"{root / 'dataset.json'}: numTraining={meta['numTraining']} but imagesTr has {len(tr)} "
            "cases; fix numTraining or the folder"
        )
    ts = nnunet_cases(root, "imagesTs", "labelsTs", ending, len(channel_names)) if (root / "labelsTs").is_dir() else {}
    return tr, ts


def _items(vols: dict[str, Volume], cases: list[str], dims: int, n_cls: int, with_label: bool) -> tuple:
    """Training items of ``cases``: slices ``<case>_slice_<k>`` (2D) or whole volumes (3D)."""
    if dims == 3:
        imgs, ids = [vols[c].image for c in cases], list(cases)
        return (imgs, [vols[c].label for c in cases], ids) if with_label else (imgs, ids)
    imgs = [s for c in cases for s in _slices(vols[c].image)]
    ids = [f"{c}_slice_{k}" for c in cases for k in range(vols[c].shape[0])]
    if not with_label:
        return imgs, ids
    labs = [s.astype(np.uint8 if n_cls < 256 else np.int16) for c in cases for s in vols[c].label]
    return imgs, labs, ids


def load_nnunet(
    cfg: DataConfig,
    name: str,
    default_dims=(3, 2),
    default_norm: str | None = None,
    patch2d=(256, 256),
    expected_classes: int | None = None,
) -> SegmentationData:
    """Load an nnU-Net v2 raw folder (module doc); ``default_norm`` None = per channel from its name."""
    root = Path(cfg.root)
    if not cfg.root or not root.is_dir():
        problem = path_problem(root) if cfg.root and not root.exists() else "is not a folder"
        raise DataError(f"dataset '{name}': data.root {root} {problem}; set data.root to the nnU-Net raw folder")
    meta, class_names = read_dataset_json(root)
    if expected_classes is not None and len(class_names) != expected_classes:
        raise DataError(
            f"{root / 'dataset.json'}: {len(class_names)} classes {list(class_names)}, but the '{name}' "
            f"preset expects {expected_classes}; use dataset 'nnunet' for other label maps"
        )
    n_cls = check_classes(name, class_names, cfg)
    if check_rule(cfg.split_rule) == "ssl4mis":
        raise ConfigError("data.split_rule='ssl4mis' applies to ACDC-layout datasets only; use 'patients'")
    channel_names = channel_names_of(meta, root / "dataset.json")
    tr, ts = _folder_cases(root, meta, channel_names)
    schemes = resolve_normalization(cfg.normalization, channel_names, default_norm)
    norm = schemes[0] if len(set(schemes)) == 1 else ",".join(schemes)
    vols = {c: _read_case(c, i, lab, n_cls, schemes, cfg.ct_window) for c, (i, lab) in {**tr, **ts}.items()}
    flat = all(v.shape[0] == 1 for v in vols.values())
    dims = check_dims(name, (2,) if flat else default_dims, cfg)
    patch = resolve_patch(cfg, dims, patch2d if dims == 2 else (64, 128, 128))
    order = sorted(tr)
    if ts:
        test = sorted(ts)
    else:
        order, test = holdout(order, cfg.test_fraction, seed=cfg.split_seed)
    order = [order[i] for i in np.random.default_rng(cfg.split_seed + 1).permutation(len(order))]
    train, val = holdout(order, cfg.val_fraction if len(order) > 1 else 0.0)
    held = f"of {len(tr) + len(ts)} cases, {len(val)} held out for validation and {len(test)} for test"
    lab_cases = select_labeled(train, cfg.labeled, str(root / "imagesTr"), held_out=held)
    unl_cases = [c for c in train if c not in set(lab_cases)]
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
        _items(vols, lab_cases, dims, n_cls, True),
        _items(vols, unl_cases, dims, n_cls, False),
        [vols[c] for c in val],
        [vols[c] for c in test],
        split,
        channel_names=channel_names,
        channel_normalization=schemes,
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


@DATASETS.register("phantom_mp")
def build_phantom_mp(cfg: DataConfig) -> SegmentationData:
    from arco.data import phantom_mp  # noqa: F401  (registers the phantom_mp generator)
    from arco.data.phantom import require_phantom

    require_phantom(cfg.root, "phantom_mp", cfg.subjects, cfg.seed, cfg.image_size)
    return load_nnunet(cfg, "phantom_mp", default_dims=(2, 3), patch2d=(64, 64))
