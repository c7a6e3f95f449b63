"""Medical Segmentation Decathlon task folder -> nnU-Net v2 raw folder (what the ``nnunet`` loader reads).

Input: ``TaskXX_Name/`` with an MSD ``dataset.json`` (``modality`` {"0": "T2", "1": "ADC"}, ``labels``
{"0": "background", ...}, ``training`` [{"image", "label"}], ``test`` [paths]), ``imagesTr/`` (4D NIfTI, the
4th axis being the modality, for multi-modal tasks), ``labelsTr/`` and ``imagesTs/``. Files named in
``dataset.json`` are used; macOS ``._*`` companions in the archives are ignored.

Output (as nnU-Net v2's ``nnUNetv2_convert_MSD_dataset``): ``imagesTr/<case>_0000.nii.gz``, ``_0001``, ...
(one 3D file per modality, header and affine of the 4D file), ``labelsTr/<case>.nii.gz`` (copied),
``imagesTs/`` likewise, and a v2 ``dataset.json`` with ``channel_names``, ``labels`` {name: value},
``numTraining``, ``file_ending`` and ``name`` ``DatasetXXX_Name`` (XX = the task number, or ``dataset_id``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from arco._checks import DataError
from arco.data.formats import read_nifti
from arco.data.io import check_image, check_label
from arco.data.outdir import staged_dir

__all__ = ["read_msd_json", "msd_dataset_name", "convert_msd"]

_TASK = re.compile(r"^Task(?P<id>\d+)_(?P<name>.+)$")


def read_msd_json(task: Path) -> dict[str, Any]:
    """Read and check an MSD ``dataset.json`` (modality, labels, training list)."""
    path = task / "dataset.json"
    if not task.is_dir():
        raise DataError(f"{task}: folder not found; give an MSD task folder such as Task05_Prostate")
    if not path.is_file():
        raise DataError(f"{path}: not found; an MSD task folder holds dataset.json, imagesTr/ and labelsTr/")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); restore it from the MSD archive") from exc
    for key in ("modality", "labels", "training"):
        if key not in meta:
            raise DataError(f"{path}: no {key!r} entry; is this an MSD dataset.json (not nnU-Net's)?")
    try:
        labels = {int(k): str(v) for k, v in meta["labels"].items()}
        modality = {int(k): str(v) for k, v in meta["modality"].items()}
    except (AttributeError, ValueError) as exc:
        raise DataError(f"{path}: 'labels' and 'modality' must map '0', '1', ... to names ({exc})") from exc
    if sorted(labels) != list(range(len(labels))) or sorted(modality) != list(range(len(modality))):
        raise DataError(f"{path}: 'labels'/'modality' keys must be 0..N-1 without gaps")
    if len(set(labels.values())) != len(labels):
        raise DataError(f"{path}: 'labels' names repeat ({list(labels.values())}); nnU-Net v2 needs unique names")
    meta["_labels"], meta["_modality"] = labels, modality
    return meta


def msd_dataset_name(task: Path, dataset_id: int | None = None) -> str:
    """``Task05_Prostate`` -> ``Dataset005_Prostate`` (``dataset_id`` overrides the number)."""
    m = _TASK.match(task.name)
    if m is None and dataset_id is None:
        raise DataError(f"{task}: folder name is not TaskXX_Name; rename it or pass --dataset-id")
    name = m["name"] if m else task.name
    return f"Dataset{int(dataset_id if dataset_id is not None else m['id']):03d}_{name}"


def _case_file(task: Path, entry: str, what: str) -> Path:
    path = (task / entry).resolve() if not Path(entry).is_absolute() else Path(entry)
    if not path.is_file():
        raise DataError(f"{task / 'dataset.json'} names {what} {entry!r} but {path} does not exist")
    return path


def _split_channels(src: Path, dst_dir: Path, case: str, n_channels: int) -> tuple[int, ...]:
    """Write one 3D NIfTI per modality of ``src`` (3D or 4D); return the spatial shape (nibabel order)."""
    import nibabel as nib

    try:
        img = nib.load(str(src))
        shape = tuple(img.shape)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for corrupt files
        raise DataError(f"{src}: cannot read NIfTI ({type(exc).__name__}: {exc}); re-extract the archive") from exc
    channels = shape[3] if len(shape) == 4 else 1
    if len(shape) not in (3, 4) or channels != n_channels:
        raise DataError(
            f"{src}: shape {shape} holds {channels} modalities but dataset.json lists {n_channels}; expected "
            f"(X, Y, Z{', ' + str(n_channels) if n_channels > 1 else ''})"
        )
    for c in range(channels):
        try:  # every voxel is read: a file cut off after its header fails here, naming it
            data = np.asanyarray(img.dataobj[..., c] if len(shape) == 4 else img.dataobj)
        except Exception as exc:  # noqa: BLE001 - nibabel/zlib raise many types for damaged data
            raise DataError(f"{src}: cannot read its voxel data ({type(exc).__name__}: {exc}); re-extract it") from exc
        check_image(data, src)  # numeric, finite
        header = img.header.copy()
        header.set_data_shape(data.shape)
        header.set_zooms(img.header.get_zooms()[:3])
        nib.save(nib.Nifti1Image(data, img.affine, header), str(dst_dir / f"{case}_{c:04d}.nii.gz"))
    return shape[:3]


def _stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem


def _convert_case(task: Path, entry: Any, tmp: Path, n_ch: int) -> str:
    if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
        raise DataError(f"{task / 'dataset.json'}: 'training' entry {entry!r} needs 'image' and 'label'")
    img = _case_file(task, entry["image"], "image")
    lab = _case_file(task, entry["label"], "label")
    case = _stem(img)
    shape = _split_channels(img, tmp / "imagesTr", case, n_ch)
    label = read_nifti(lab)[0]  # read whole (a cut-off label is named here, never copied)
    lab_shape = label.shape[::-1]
    if tuple(lab_shape) != tuple(shape):
        raise DataError(f"{lab}: label shape {lab_shape} differs from its image {img} {shape}; re-extract them")
    check_label(label, label.shape, lab)
    shutil.copyfile(lab, tmp / "labelsTr" / f"{case}.nii.gz")
    return case


def convert_msd(
    task: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, dataset_id: int | None = None
) -> dict[str, Any]:
    """Convert an MSD task folder into an nnU-Net v2 raw folder at ``out`` (see the module doc).

    Raises:
        DataError: bad dataset.json, a missing/corrupt image or label (named), a label not on its image's
        grid. FileExistsError: ``out`` is not empty and ``overwrite`` is False. ValueError: ``out`` overlaps
        ``task``.
    """
    task, out = Path(task), Path(out)
    meta = read_msd_json(task)
    name = msd_dataset_name(task, dataset_id)
    n_ch = len(meta["_modality"])
    with staged_dir(out, overwrite, inputs=[task]) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        cases = [_convert_case(task, entry, tmp, n_ch) for entry in meta["training"]]
        tests = []
        for entry in meta.get("test", []):
            img = _case_file(task, entry if isinstance(entry, str) else entry["image"], "test image")
            tests.append(_stem(img))
            _split_channels(img, tmp / "imagesTs", tests[-1], n_ch)
        v2 = {
            "name": name,
            "channel_names": {str(k): v for k, v in sorted(meta["_modality"].items())},
            "labels": {v: k for k, v in sorted(meta["_labels"].items())},
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
            **{k: meta[k] for k in ("description", "reference", "licence", "release") if k in meta},
            "converted_from": task.name,
        }
        (tmp / "dataset.json").write_text(json.dumps(v2, indent=2) + "\n")
    return {"source": str(task.resolve()), "name": name, "training": len(cases), "test": len(tests), "channels": n_ch}
