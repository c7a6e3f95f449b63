"""`arco predict`: segment NIfTI scans with a trained checkpoint; one label NIfTI per scan.

``arco predict --checkpoint RUN_OR_PT --input DIR_OR_FILE [DIR_OR_FILE ...] --out DIR [--overwrite]``

Each scan is read with the checkpoint's intensity normalisation, segmented whole (2D: slice by slice, batched;
3D: sliding window, batched) and written to ``--out`` under the same file name, in the scan's own geometry
(shape, affine, header spacing). Everything is checked before any work starts: inputs must be NIfTI files,
``--out`` must be writable, existing outputs are never replaced without ``--overwrite``, and ``--out`` may not
be an input folder unless ``--in-place-ok`` is given, and then only with a ``--suffix`` (say ``_seg``) so no
scan is replaced by its segmentation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from arco.cli.evaluate import (
    add_inference_args,
    is_nifti,
    list_nifti,
    load_model,
    nifti_stem,
    predictor_fn,
    resolve_device,
)

__all__ = ["add_parser", "run", "plan_outputs"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment NIfTI scans with a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="run folder (uses checkpoints/best.pt) or .pt file")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH", help="NIfTI scans or folders of them")
    p.add_argument("--out", required=True, help="output folder for the label files")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--in-place-ok",
        action="store_true",
        help="allow --out to be an input folder (needs --suffix so scans are never replaced)",
    )
    p.add_argument("--suffix", default="", help="appended to each output file stem, e.g. _seg (default: none)")
    add_inference_args(p)
    p.set_defaults(func=run)


def _collect(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += list_nifti(path, "--input")
        elif not path.exists():
            raise FileNotFoundError(f"--input {path} does not exist")
        elif not is_nifti(path):
            raise ValueError(f"--input {path} is not a NIfTI file (.nii or .nii.gz); give scans or folders of them")
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def _check_header(path: Path) -> None:
    """Read the NIfTI header only (cheap), so a corrupt file fails before any scan is segmented."""
    import nibabel as nib

    from arco._checks import DataError

    try:
        nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for corrupt files; re-raised
        raise DataError(f"{path}: cannot read NIfTI header ({type(exc).__name__}: {exc}); re-export it") from exc


def plan_outputs(
    inputs: list[str], out: Path, suffix: str = "", overwrite: bool = False, in_place_ok: bool = False
) -> list[tuple[Path, Path]]:
    """Map every input scan to its output path; refuse unsafe plans before any work starts."""
    files = _collect(inputs)
    out_r = out.resolve()
    in_dirs = {f.parent.resolve() for f in files}
    if out_r in in_dirs and not in_place_ok:
        raise ValueError(
            f"--out {out} is an input folder; predictions would mix with the scans. Choose another --out, "
            "or pass --in-place-ok --suffix _seg"
        )
    plan = []
    for f in files:
        ext = ".nii.gz" if f.name.endswith(".nii.gz") else ".nii"
        plan.append((f, out / f"{nifti_stem(f)}{suffix}{ext}"))
    targets = [t.resolve() for _, t in plan]
    if len(set(targets)) != len(targets):
        raise ValueError("two inputs share a file name, so their outputs would collide; predict them separately")
    clash = [str(t) for (f, t) in plan if t.resolve() == f.resolve()]
    if clash:
        raise ValueError(f"output {clash[0]} would replace the input scan itself; pass --suffix _seg")
    for f, _ in plan:
        _check_header(f)
    existing = [str(t) for _, t in plan if t.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(f"outputs exist: {', '.join(existing[:3])}{more}; pass --overwrite to replace them")
    return plan


def run(args: argparse.Namespace) -> int:
    import nibabel as nib
    from tqdm import tqdm

    from arco._checks import CheckpointError
    from arco.data.io import read_scan, write_label_like
    from arco.evaluation import check_writable, predict_volume

    out = Path(args.out)
    plan = plan_outputs(args.input, out, args.suffix, args.overwrite, args.in_place_ok)
    check_writable(out)
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    data = meta["data"]
    normalization = data.get("normalization")
    if not normalization:
        raise CheckpointError(
            f"checkpoint {meta['path']} does not record its intensity normalisation (data.normalization); "
            "re-save it with `arco train`"
        )
    predict = predictor_fn(model)
    for scan, target in tqdm(plan, desc="predict", unit="scan"):
        vol = read_scan(scan, normalization)
        label = predict_volume(
            predict,
            vol.image,
            int(data["spatial_dims"]),
            tuple(data["patch_size"]),
            batch_size=args.batch_size,
            device=device,
            stride=args.stride,
            overlap=args.overlap,
            blend=args.blend,
        )
        if len(nib.load(str(scan)).shape) == 2:  # read_scan gave a 2D scan a leading axis of size 1
            label = label[0]
        write_label_like(label, scan, target, overwrite=args.overwrite)
    print(f"wrote {len(plan)} label file(s) to {out}")
    return 0
