"""The ``preprocessed`` dataset: train from a folder written by ``arco data preprocess`` without loading it.

``data.dataset=preprocessed``, ``data.root=<folder>``. Splits follow the ``nnunet`` dataset exactly (test =
the imagesTs cases when they had labels, else ``test_fraction`` of the training cases; val = ``val_fraction`` of
the rest; labeled = the first N in the same seeded order), so a run on the preprocessed copy uses the same cases
as a run on the raw folder. Training items are read patch by patch (`arco.data.lazy`); val/test volumes are
`LazyVolume`s on the preprocessed grid (metrics are computed there; `restore_label` maps labels back).

Before building, the source fingerprints stored at preprocessing are checked: a changed, added or removed
source case is an error whose fix is to rerun ``arco data preprocess`` (incremental); a source folder that is
not reachable any more (the copy was moved to a training machine) only gives a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import ConfigError, DataError
from arco.data.build import DATASETS, SegmentationData, check_classes, check_dims, resolve_patch
from arco.data.config import DataConfig
from arco.data.fingerprint import matches
from arco.data.lazy import CaseTable, LazyPatchDataset, LazySliceDataset, LazyVolume
from arco.data.preprocess import FORMAT, VERSION, scan_source
from arco.data.resample import restore_label
from arco.data.splits import check_rule, holdout, select_labeled

__all__ = ["read_index", "source_changes", "check_source", "load_preprocessed", "to_original"]

# Same defaults as the nnU-Net presets of arco.data.nnunet: (spatial_dims allowed, default first).
_DIMS = {"nnunet": (3, 2), "lits": (2, 3), "mmwhs": (2, 3)}


def read_index(root: str | Path) -> dict[str, Any]:
    """Read and check ``<root>/preprocessed.json``.

    Raises:
        DataError: missing folder or index, invalid JSON, another format or version, missing case files.
    """
    root = Path(root)
    path = root / "preprocessed.json"
    fix = f"run `arco data preprocess SRC --out {root}` first"
    if not path.is_file():
        raise DataError(f"{path}: not found; {root} is not a preprocessed folder ({fix})")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {fix} again") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
        got = (index.get("format"), index.get("version")) if isinstance(index, dict) else type(index).__name__
        raise DataError(f"{path}: expected format {FORMAT!r} version {VERSION}, got {got}; {fix} again")
    if not index.get("cases"):
        raise DataError(f"{path}: lists no cases; {fix} again")
    for case, e in index["cases"].items():
        missing = [e[k] for k in ("image", "label", "locations") if not (root / "cases" / e[k]).is_file()]
        if missing:
            raise DataError(f"{root / 'cases'}: file(s) {missing} of case {case} are missing; {fix} again")
    return index


def source_changes(index: dict[str, Any]) -> dict[str, list[str]] | None:
    """Compare the source folder with the fingerprints in ``index``: ``{"changed", "added", "removed"}`` case
    lists, or None when the source folder is not reachable."""
    src = Path(index["source"])
    if not src.is_dir():
        return None
    try:
        _, class_names, cases = scan_source(src, index.get("dataset", "nnunet"))
    except DataError as exc:
        return {"changed": [f"(the folder no longer reads: {exc})"], "added": [], "removed": []}
    stored = index["cases"]
    changed = [
        c
        for c, e in stored.items()
        if c in cases
        and not (matches(cases[c][0], e["fingerprint"]["image"]) and matches(cases[c][1], e["fingerprint"]["label"]))
    ]
    if list(class_names) != list(index["class_names"]):
        changed.insert(0, f"(dataset.json labels now {list(class_names)})")
    return {"changed": changed, "added": sorted(set(cases) - set(stored)), "removed": sorted(set(stored) - set(cases))}


def check_source(index: dict[str, Any], root: str | Path) -> None:
    """Raise `DataError` when the source of a preprocessed folder changed; warn when it cannot be checked."""
    diff = source_changes(index)
    if diff is None:
        warnings.warn(
            f"{root}: the source folder {index['source']} is not reachable; cannot check that the preprocessed "
            "copy is up to date (training on it anyway)",
            UserWarning,
            stacklevel=3,
        )
        return
    if any(diff.values()):
        parts = [f"{k} {len(v)} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})" for k, v in diff.items() if v]
        raise DataError(
            f"{root}: the source {index['source']} changed since it was preprocessed: {'; '.join(parts)}. Rerun "
            f"`arco data preprocess {index['source']} --out {root}` with the same options (only changed cases are "
            "redone)"
        )


def _split(cfg: DataConfig, tr: list[str], ts: list[str], where: str) -> dict[str, Any]:
    """The `arco.data.nnunet` split rule, on case ids."""
    order = sorted(tr)
    if ts:
        test = sorted(ts)
    else:
        order, test = holdout(order, cfg.test_fraction, seed=cfg.split_seed)
    order = [order[i] for i in np.random.default_rng(cfg.split_seed + 1).permutation(len(order))]
    train, val = holdout(order, cfg.val_fraction if len(order) > 1 else 0.0)
    labeled = select_labeled(train, cfg.labeled, where)
    unlabeled = [c for c in train if c not in set(labeled)]
    return {"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": test}


def _volume(root: Path, e: dict[str, Any]) -> LazyVolume:
    base = root / "cases"
    return LazyVolume(
        e["case_id"],
        str(base / e["image"]),
        str(base / e["label"]),
        e["shape"][1:],
        e["spacing"],
        np.asarray(e["affine"], dtype=np.float64),
        e.get("source", {}).get("image"),
    )


def _check_config(cfg: DataConfig, index: dict[str, Any]) -> str:
    if check_rule(cfg.split_rule) == "ssl4mis":
        raise ConfigError("data.split_rule='ssl4mis' applies to ACDC-layout datasets only; use 'patients'")
    norm = index["settings"]["normalization"]
    if cfg.normalization and cfg.normalization != norm:
        raise ConfigError(
            f"data.normalization={cfg.normalization!r} but {cfg.root} was preprocessed with {norm!r}; leave "
            "data.normalization empty or preprocess again with --normalization"
        )
    if not 0.0 <= cfg.oversample_foreground <= 1.0:
        raise ConfigError(f"data.oversample_foreground must be in [0, 1], got {cfg.oversample_foreground}")
    channels = {e["shape"][0] for e in index["cases"].values()}
    if channels != {1}:
        raise DataError(f"{cfg.root}: cases have {sorted(channels)} channels; the training datasets read one")
    return norm


@DATASETS.register("preprocessed")
def load_preprocessed(cfg: DataConfig) -> SegmentationData:
    """Build the lazy `SegmentationData` of a preprocessed folder (see the module docstring)."""
    name = "preprocessed"
    if not cfg.root:
        raise DataError("dataset 'preprocessed' needs data.root=<folder written by arco data preprocess>")
    root = Path(cfg.root)
    index = read_index(root)
    check_source(index, root)
    entries = index["cases"]
    norm = _check_config(cfg, index)
    class_names = tuple(index["class_names"])
    check_classes(name, class_names, cfg)
    flat = all(e["shape"][1] == 1 for e in entries.values())
    dims = check_dims(name, (2,) if flat else _DIMS.get(index.get("dataset"), (3, 2)), cfg)
    patch = resolve_patch(cfg, dims, (256, 256) if dims == 2 else (64, 128, 128))
    tr = [c for c, e in entries.items() if e["part"] == "train"]
    ts = [c for c, e in entries.items() if e["part"] == "test"]
    parts = _split(cfg, tr, ts, str(root))
    p = cfg.oversample_foreground

    def dataset(cases: list[str], with_label: bool):
        table = CaseTable(root, [entries[c] for c in cases])
        if dims == 2:
            return LazySliceDataset(table, with_label, patch, cfg.augment, cfg.rotation, cfg.max_zoom, p)
        return LazyPatchDataset(table, with_label, patch, cfg.augment, p)

    labeled, unlabeled = dataset(parts["labeled"], True), dataset(parts["unlabeled"], False)
    if len(labeled) == 0:
        raise DataError(f"dataset '{name}' at {root}: the labeled set is empty (data.labeled={cfg.labeled!r})")
    split = {
        "dataset": name,
        "root": cfg.root,
        "labeled_spec": str(cfg.labeled),
        "rule": cfg.split_rule,
        "labeled": parts["labeled"],
        "unlabeled": parts["unlabeled"],
        "split_seed": cfg.split_seed,
        "test_from": "imagesTs" if ts else "imagesTr",
        "source": index["source"],
        "preprocessing": index["settings_key"],
        "num_labeled_items": len(labeled),
        "num_unlabeled_items": len(unlabeled),
        "val": parts["val"],
        "test": parts["test"],
    }
    val = [_volume(root, entries[c]) for c in parts["val"]]
    test = [_volume(root, entries[c]) for c in parts["test"]]
    return SegmentationData(
        name, dims, len(class_names), class_names, patch, norm, labeled, unlabeled, val, test, split
    )


def to_original(label: np.ndarray, root: str | Path, case: str) -> np.ndarray:
    """Map a label ``(Z, Y, X)`` on the preprocessed grid of ``case`` back to its source scan's grid (undo the
    resampling with nearest neighbour, then the crop); write it with `arco.data.io.write_label_like` and the
    source image as reference.

    Raises:
        DataError: unknown case, or ``label`` not on the preprocessed grid.
    """
    entries = read_index(root)["cases"]
    if case not in entries:
        raise DataError(f"{root}: no case {case!r} in preprocessed.json")
    e = entries[case]
    if tuple(np.shape(label)) != tuple(e["shape"][1:]):
        raise DataError(
            f"to_original(): label of shape {np.shape(label)} is not on the grid {e['shape'][1:]} of {case}"
        )
    box = tuple(tuple(b) for b in e["crop_box"])
    return restore_label(np.asarray(label), e["original"]["shape"], box)
