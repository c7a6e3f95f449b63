"""`arco data preprocess`: an nnU-Net v2 raw folder -> a folder of memory-mappable cases (nnU-Net style).

Per case: crop to the body (or the labelled foreground), normalise, resample to one target spacing, then write
``cases/<case>_image.npy`` ``(C, Z, Y, X)`` float32/float16, ``cases/<case>_label.npy`` ``(Z, Y, X)`` uint8,
``cases/<case>_locations.npy`` (sampled foreground voxels per class, for oversampled patches) and
``cases/<case>.json`` (geometry, fingerprint of the source files). ``preprocessed.json`` indexes the folder. The
layout is described in docs/design.md; `arco.data.preprocessed` reads it lazily.

Reruns are incremental: a case is redone only when its source files or the settings changed. A run is all or
nothing for ``out``: new cases are written to a staging folder beside it (``.<out>.arco-partial``) and moved into
``out`` (arrays first, each case's json last) only when every case succeeded; a failure leaves ``out`` as it was,
names the case, and keeps the cases finished so far in the staging folder, where the next run picks them up (an
interrupted run resumes where it stopped). Nothing under the source folder is written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import ArcoError, DataError, choice
from arco._io import atomic_write_text, check_out_dir, fsync_dir, writing
from arco.data.fingerprint import HASH_MODES, file_fingerprint, matches
from arco.data.nnunet import nnunet_cases, read_dataset_json
from arco.data.preprocess_case import VERSION, PreprocessSettings, process_case
from arco.data.resample import check_spacing
from arco.data.volume import NORMALIZATIONS

__all__ = [
    "FORMAT",
    "VERSION",
    "CROPS",
    "STORAGE_DTYPES",
    "PRESETS",
    "PreprocessSettings",
    "preprocess_dataset",
    "resolve_settings",
    "scan_source",
]

logger = logging.getLogger(__name__)

FORMAT = "arco-preprocessed"
CROPS = ("body", "foreground", "none")
STORAGE_DTYPES = ("float32", "float16")
# dataset kind -> (default normalisation, expected number of classes); see arco.data.nnunet's presets.
PRESETS: dict[str, tuple[str | None, int | None]] = {"nnunet": (None, None), "lits": ("ct", 3), "mmwhs": ("zscore", 8)}
FOREGROUND_MARGIN = 10  # voxels kept around the label box by crop="foreground"
LOCATIONS_PER_CLASS = 10_000  # nnU-Net's num_samples per class (see arco.data.preprocess_case.class_locations)


def scan_source(src: str | os.PathLike, dataset: str = "nnunet") -> tuple[dict, tuple[str, ...], dict[str, tuple]]:
    """Check an nnU-Net raw folder; return ``(dataset.json, class names, {case: (image, label, part)})`` where
    ``part`` is ``"train"`` (imagesTr) or ``"test"`` (imagesTs with labelsTs; imagesTs without labels is skipped,
    as the ``nnunet`` dataset does).

    Raises:
        DataError: missing folder or files, bad dataset.json, a class count that does not fit the preset.
    """
    root = Path(src)
    choice("dataset", dataset, tuple(PRESETS), "arco data preprocess")
    if not root.is_dir():
        raise DataError(f"source folder {root} not found; give an nnU-Net v2 raw folder (dataset.json, imagesTr/)")
    meta, class_names = read_dataset_json(root)
    expected = PRESETS[dataset][1]
    if expected is not None and len(class_names) != expected:
        raise DataError(
            f"{root / 'dataset.json'}: {len(class_names)} classes {list(class_names)}, but the '{dataset}' preset "
            f"expects {expected}; use --dataset nnunet for other label maps"
        )
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii"):
        raise DataError(f"{root / 'dataset.json'}: file_ending {ending!r} is not supported (NIfTI only)")
    if not (root / "imagesTr").is_dir() or not (root / "labelsTr").is_dir():
        raise DataError(f"{root}: imagesTr/ and labelsTr/ are required in an nnU-Net raw folder")
    tr = nnunet_cases(root, "imagesTr", "labelsTr", ending)
    if not tr:
        raise DataError(f"{root / 'imagesTr'}: no images named <case>_0000{ending}")
    ts = nnunet_cases(root, "imagesTs", "labelsTs", ending) if (root / "labelsTs").is_dir() else {}
    if len(meta.get("channel_names") or {"0": ""}) > 1:
        raise DataError(
            f"{root / 'dataset.json'} declares {len(meta['channel_names'])} channels; `arco data preprocess` reads "
            "single-channel folders for now (train multi-channel data from the raw folder: data.dataset=nnunet)"
        )
    # nnunet_cases lists each case's channel files; a single-channel folder has one
    cases = {c: (i[0], lab, "train") for c, (i, lab) in tr.items()}
    cases.update({c: (i[0], lab, "test") for c, (i, lab) in ts.items()})
    return meta, class_names, cases


def _median_spacing(cases: dict[str, tuple]) -> tuple[float, float, float]:
    import nibabel as nib

    spacings = []
    for img, _, _ in cases.values():
        try:
            zooms = nib.load(str(img)).header.get_zooms()[:3]
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for corrupt headers
            raise DataError(f"{img}: cannot read the NIfTI header ({type(exc).__name__}: {exc})") from exc
        zooms = tuple(float(z) for z in zooms) + (1.0,) * (3 - len(zooms))
        spacings.append(check_spacing(zooms[::-1], f"{img}: header pixdim", DataError))
    return tuple(round(float(s), 6) for s in np.median(np.asarray(spacings), axis=0))


def resolve_settings(
    dataset: str,
    meta: dict,
    class_names: tuple[str, ...],
    cases: dict[str, tuple],
    spacing: str | tuple[float, ...] | None = "median",
    normalization: str = "",
    ct_window: tuple[float, float] = (-200.0, 250.0),
    crop: str = "body",
    margin: int | None = None,
    body_threshold: float | None = None,
    dtype: str = "float32",
    locations: int = LOCATIONS_PER_CLASS,
) -> PreprocessSettings:
    """Check the options and fill in the defaults (see `preprocess_dataset`)."""
    where = "arco data preprocess"
    choice("crop", crop, CROPS, where)
    choice("dtype", dtype, STORAGE_DTYPES, where)
    if not normalization:
        channel = str(next(iter(meta.get("channel_names", {"0": ""}).values()), ""))
        normalization = PRESETS[dataset][0] or ("ct" if channel.upper() == "CT" else "zscore")
    choice("normalization", normalization, NORMALIZATIONS, where)
    if spacing == "median":
        target = _median_spacing(cases)
    elif spacing is None or spacing == "original":
        target = None
    else:
        target = check_spacing(spacing, f"{where}: --spacing")
    lo, hi = (float(v) for v in ct_window)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{where}: --ct-window must be two finite numbers LOW < HIGH (HU), got {list(ct_window)}")
    if margin is None:
        margin = FOREGROUND_MARGIN if crop == "foreground" else 0
    if int(margin) < 0 or int(locations) < 0:
        raise ValueError(f"{where}: --margin and --locations must be >= 0, got {margin} and {locations}")
    if body_threshold is not None and not math.isfinite(float(body_threshold)):
        raise ValueError(f"{where}: --body-threshold must be a finite number, got {body_threshold}")
    return PreprocessSettings(
        target, normalization, (lo, hi), crop, int(margin), body_threshold, dtype, int(locations), class_names
    )


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    s, o = src.resolve(), out.resolve()
    if o == s or s.is_relative_to(o):
        raise ValueError(f"--out {out} must not be the source folder {src} or contain it; choose another folder")
    check_out_dir(out)
    index = out / "preprocessed.json"
    if out.is_dir() and any(out.iterdir()) and not index.is_file() and not (out / "cases").is_dir():
        raise FileExistsError(f"--out {out} is a non-empty folder that holds no preprocessed data; choose a new folder")
    if index.is_file() and not overwrite:
        try:
            old = json.loads(index.read_text()).get("source")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise DataError(f"{index}: not valid JSON; pass --overwrite to rebuild the folder") from None
        if old != str(s):
            raise FileExistsError(
                f"--out {out} holds a preprocessed copy of {old}, not of {s}; choose another --out or pass --overwrite"
            )


def _current_entry(
    folder: Path, case: str, img: Path, lab: Path, key: str, hash_mode: str, stage: Path
) -> tuple[dict | None, bool]:
    """``(entry, refreshed)``: the entry of ``case`` stored in ``folder`` (``out`` or the staging folder) when it is
    complete, made with settings ``key`` and its source unchanged, else None. Fingerprints taken in the other hash
    mode are redone and the refreshed json is written to ``stage`` (``refreshed``)."""
    path = folder / "cases" / f"{case}.json"
    try:
        entry = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None, False
    fp = entry.get("fingerprint", {})
    if (
        not isinstance(fp, dict)
        or entry.get("settings_key") != key
        or not matches(img, fp.get("image", {}))
        or not matches(lab, fp.get("label", {}))
    ):
        return None, False
    if not all((folder / "cases" / str(entry.get(k))).is_file() for k in ("image", "label", "locations")):
        return None, False
    entry["source"] = {"image": str(img), "label": str(lab)}
    if fp["image"].get("mode") != hash_mode or fp["label"].get("mode") != hash_mode:
        entry["fingerprint"] = {"image": file_fingerprint(img, hash_mode), "label": file_fingerprint(lab, hash_mode)}
        atomic_write_text(stage / "cases" / f"{case}.json", json.dumps(entry, indent=1))
        return entry, True
    return entry, False


def _staging(out: Path, fresh: bool = False) -> Path:
    """The folder beside ``out`` that holds the cases of a run until every case succeeded (created; emptied first
    when ``fresh``)."""
    stage = out.parent / f".{out.name}.arco-partial"
    with writing(stage):
        if fresh and stage.exists():
            shutil.rmtree(stage)
        (stage / "cases").mkdir(parents=True, exist_ok=True)
    return stage


_ARRAYS = ("image", "label", "locations")


def _publish(stage: Path, out: Path, staged: list[str]) -> None:
    """Move the ``staged`` cases into ``out/cases``: every array first, then each case's json (the marker)."""
    with writing(out):
        (out / "cases").mkdir(parents=True, exist_ok=True)
        for last in (False, True):
            for case in staged:
                for name in [f"{case}.json"] if last else [f"{case}_{k}.npy" for k in _ARRAYS]:
                    if (stage / "cases" / name).is_file():
                        os.replace(stage / "cases" / name, out / "cases" / name)
            fsync_dir(out / "cases")


def _remove_stale(out: Path, keep: set[str]) -> list[str]:
    removed = []
    for path in sorted((out / "cases").glob("*.json")):
        if path.stem in keep:
            continue
        for k in ("image", "label", "locations"):
            (out / "cases" / f"{path.stem}_{k}.npy").unlink(missing_ok=True)
        path.unlink()
        removed.append(path.stem)
    return removed


def _failed(task: dict, exc: BaseException) -> ArcoError:
    return DataError(f"case {task['case']} ({task['image']}) failed: {exc}")


def _run(tasks: list[dict], jobs: int, progress: Callable | None) -> list[dict]:
    """Process ``tasks``; the first failure raises naming its case."""
    wrap = progress or (lambda it, total: it)
    if not tasks:
        return []
    if jobs <= 1 or len(tasks) <= 1:
        out = []
        for t in wrap(tasks, len(tasks)):
            try:
                out.append(process_case(t))
            except (ArcoError, ValueError, OSError) as exc:
                raise _failed(t, exc) from exc
        return out
    import multiprocessing

    # spawn: forked workers would inherit torch's thread pools from the parent (the CLI imported it).
    with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(process_case, t): t for t in tasks}
        done = []
        try:
            for f in wrap(as_completed(futures), len(futures)):
                try:
                    done.append(f.result())
                except (ArcoError, ValueError, OSError) as exc:
                    raise _failed(futures[f], exc) from exc
            return done
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _plan(
    cases: dict[str, tuple], out: Path, stage: Path, settings: PreprocessSettings, hash_mode: str, overwrite: bool
) -> tuple[dict[str, dict], list[str], list[dict]]:
    """``(entries of the cases already done, those of them waiting in the staging folder, tasks to run)``: a case
    is done when the staging folder or ``out`` holds it complete, with these settings and its source unchanged."""
    key = settings.key()
    entries, staged, tasks = {}, [], []
    for case, (img, lab, part) in sorted(cases.items()):
        for folder in () if overwrite else (stage, out):
            entry, refreshed = _current_entry(folder, case, img, lab, key, hash_mode, stage)
            if entry is not None and entry.get("part") == part:
                entries[case] = entry
                if folder == stage or refreshed:
                    staged.append(case)
                break
        if case in entries:
            continue
        task = {"case": case, "image": str(img), "label": str(lab), "part": part, "out": str(stage)}
        tasks.append({**task, "settings": asdict(settings), "hash": hash_mode})
    return entries, staged, tasks


def preprocess_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset: str = "nnunet",
    hash_mode: str = "fast",
    jobs: int = 1,
    overwrite: bool = False,
    progress: Callable[[Iterable, int], Iterable] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Preprocess the nnU-Net raw folder ``src`` into ``out`` (incremental; see the module docstring).

    Args:
        src: nnU-Net v2 raw folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, optional ``imagesTs`` +
            ``labelsTs``). Never written to.
        out: output folder (created; an existing one must be a preprocessed copy of the same source).
        dataset: ``nnunet``, ``lits`` (CT window, 3 classes) or ``mmwhs`` (z-score, 8 classes): the defaults.
        hash_mode: ``fast`` (first/last MiB) or ``full`` fingerprints of the source files.
        jobs: worker processes (each holds one case in memory at a time).
        overwrite: redo every case, and accept an ``out`` that holds another source's copy.
        progress: optional ``(iterable, total) -> iterable`` wrapper (the CLI passes tqdm).
        **options: ``spacing`` (``"median"`` (default, nnU-Net), ``"original"`` or 3 numbers Z Y X mm),
            ``normalization``, ``ct_window``, ``crop``, ``margin``, ``body_threshold``, ``dtype``, ``locations``:
            see `PreprocessSettings`.

    Returns:
        ``{"out", "index", "cases", "processed", "skipped", "removed", "seconds", "settings"}``.

    Raises:
        DataError: bad source (missing/corrupt files, shape or affine mismatch, labels out of range, bad spacing).
        ValueError: bad options. FileExistsError: ``out`` belongs to something else.
    """
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    choice("hash_mode", hash_mode, HASH_MODES, "arco data preprocess")
    if int(jobs) < 1:
        raise ValueError(f"arco data preprocess: --jobs must be >= 1, got {jobs}")
    meta, class_names, cases = scan_source(src, dataset)
    _check_out(src, out, overwrite)
    settings = resolve_settings(dataset, meta, class_names, cases, **options)
    stage = _staging(out, fresh=overwrite)
    entries, staged, tasks = _plan(cases, out, stage, settings, hash_mode, overwrite)
    skipped = len(entries)
    logger.info("preprocess %s -> %s: %d case(s) to do, %d unchanged", src, out, len(tasks), skipped)
    try:
        results = _run(tasks, int(jobs), progress)
    except ArcoError as exc:
        kept = len(list((stage / "cases").glob("*.json")))
        raise DataError(f"{exc}. {out} was left as it was; the {kept} case(s) finished so far wait in {stage} and "
                        "are reused when you rerun the same command after fixing the case") from exc  # fmt: skip
    for entry in results:
        entries[entry["case_id"]] = entry
        staged.append(entry["case_id"])
    _publish(stage, out, staged)
    removed = _remove_stale(out, set(entries))
    index = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(src.resolve()),
        "dataset": dataset,
        "class_names": list(class_names),
        "channel_names": meta.get("channel_names", meta.get("modality", {"0": "image"})),
        "settings": asdict(settings),
        "settings_key": settings.key(),
        "hash_mode": hash_mode,
        "cases": {c: entries[c] for c in sorted(entries)},
    }
    atomic_write_text(out / "preprocessed.json", json.dumps(index, indent=1))
    shutil.rmtree(stage, ignore_errors=True)
    return {
        "out": str(out),
        "index": str(out / "preprocessed.json"),
        "cases": len(entries),
        "processed": len(tasks),
        "skipped": skipped,
        "removed": removed,
        "seconds": round(time.perf_counter() - t0, 2),
        "settings": asdict(settings),
    }
