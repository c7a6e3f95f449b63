"""`arco predict`: segment scans with a trained checkpoint; one label file per case, in the scan's geometry.

``arco predict --checkpoint RUN_OR_PT --input PATH [PATH ...] --out DIR [--format nifti|input|nrrd|mha]``

Inputs: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) files, DICOM series folders,
or folders of these. A multi-channel model (e.g. trained on T2 + ADC + DWI) takes each case as its channel
files named as nnU-Net does, ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... (given as files or as a
folder of them); the channel order is the training order (shown by ``arco predict --checkpoint X --input``
errors and stored in the checkpoint).

Each case is read with the checkpoint's per-channel intensity normalisation, segmented whole (2D: slice by
slice, batched; 3D: sliding window, batched) and written to ``--out`` in the scan's own geometry (shape,
spacing, origin, direction): NIfTI by default (``<name>.nii.gz``; a NIfTI input keeps its extension and
header), or the input's own format with ``--format input`` (NRRD -> .nrrd, MetaImage -> .mha; DICOM input
has no DICOM output: use nifti, nrrd or mha), or ``--format nrrd|mha``. Single-channel outputs keep the input
file name; multi-channel cases are named ``<case>``.

Everything is checked before any work starts: inputs must be readable images, read whole (every voxel: a file
cut off after its header, NaN/inf values or a DICOM series with a missing, duplicated or unreadable slice is an
error naming the file), ``--out`` must be a writable folder, existing outputs are never replaced without
``--overwrite``, and ``--out`` may not be an input folder unless ``--in-place-ok`` is given, and then only
with a ``--suffix`` (say ``_seg``) so no scan is replaced by its segmentation. ``--allow-slice-gaps`` accepts
a DICOM series with missing slices (one output slice per file) and says so. Outputs are all or nothing: the
labels are written to a temporary folder and moved into ``--out`` only when every case succeeded, so a failure
leaves ``--out`` as it was.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from arco.cli.evaluate import add_inference_args, load_model, predictor_fn, resolve_device

__all__ = ["add_parser", "run", "plan_outputs", "FORMATS"]

FORMATS = ("nifti", "input", "nrrd", "mha")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment scans (NIfTI, NRRD, MHA, DICOM) with a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="run folder (uses checkpoints/best.pt) or .pt file")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH", help="scans, DICOM folders, or folders")
    p.add_argument("--out", required=True, help="output folder for the label files")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="nifti",
        help="output format: nifti (default), input (the scan's own format), nrrd or mha",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--in-place-ok",
        action="store_true",
        help="allow --out to be an input folder (needs --suffix so scans are never replaced)",
    )
    p.add_argument("--suffix", default="", help="appended to each output file stem, e.g. _seg (default: none)")
    p.add_argument(
        "--allow-slice-gaps",
        action="store_true",
        help="accept DICOM series with missing or unevenly spaced slices (reported; one output slice per file)",
    )
    add_inference_args(p)
    p.set_defaults(func=run)


def _output_suffix(case: Any, fmt: str) -> str:
    from arco.data.formats import NIFTI_SUFFIXES, OUTPUT_FORMATS, image_suffix

    src = image_suffix(case.reference)
    if fmt in ("nifti", "input") and src in NIFTI_SUFFIXES:
        return src  # a NIfTI scan keeps its extension (.nii stays .nii)
    if fmt == "input":
        if case.is_dicom:
            raise ValueError(
                f"--format input: {case.reference} is a DICOM series and arco does not write DICOM; "
                "use --format nifti, nrrd or mha"
            )
        return {".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}[src]
    return OUTPUT_FORMATS[fmt]


def _check_case(case: Any, allow_gaps: bool = False) -> None:
    """Read headers only (cheap) so that a corrupt file or a channel off the grid fails before any work."""
    import numpy as np

    from arco._checks import DataError
    from arco.data.formats import read_header

    if case.is_dicom:
        from arco.data.formats import dicom_series_files

        dicom_series_files(case.reference, allow_gaps)  # one complete series; its pixels are read next
        return
    shape, affine = read_header(case.reference)
    for other in case.files[1:]:
        o_shape, o_affine = read_header(other)
        if o_shape != shape or not np.allclose(o_affine, affine, atol=1e-3, rtol=1e-4):
            raise DataError(
                f"{other}: grid (shape {o_shape}) differs from {case.reference} (shape {shape}) or its affine "
                "does not match; all channels of a case must be co-registered (resample them)"
            )


def plan_outputs(
    inputs: list[str],
    out: Path,
    suffix: str = "",
    overwrite: bool = False,
    in_place_ok: bool = False,
    in_channels: int = 1,
    channel_names: tuple[str, ...] = (),
    fmt: str = "nifti",
    allow_gaps: bool = False,
) -> list[tuple[Any, Path]]:
    """Map every input case to its output path; refuse unsafe plans before any work starts."""
    from arco.data.cases import collect_cases

    cases = collect_cases(inputs, in_channels, channel_names)
    out_r = out.resolve()
    in_dirs = {f.parent.resolve() for c in cases for f in c.files}
    if out_r in in_dirs and not in_place_ok:
        raise ValueError(
            f"--out {out} is an input folder; predictions would mix with the scans. Choose another --out, "
            "or pass --in-place-ok --suffix _seg"
        )
    plan = [(c, out / f"{c.name}{suffix}{_output_suffix(c, fmt)}") for c in cases]
    targets = [t.resolve() for _, t in plan]
    if len(set(targets)) != len(targets):
        raise ValueError("two inputs share a file name, so their outputs would collide; predict them separately")
    clash = [str(t) for c, t in plan if any(t.resolve() == f.resolve() for f in c.files)]
    if clash:
        raise ValueError(f"output {clash[0]} would replace the input scan itself; pass --suffix _seg")
    for case, _ in plan:
        _check_case(case, allow_gaps)
    existing = [str(t) for _, t in plan if t.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(f"outputs exist: {', '.join(existing[:3])}{more}; pass --overwrite to replace them")
    return plan


def checkpoint_channels(meta: dict[str, Any]) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    """``(in_channels, channel names, normalisation per channel)`` recorded in a checkpoint."""
    from arco._checks import CheckpointError

    data = meta["data"]
    n = int(data.get("in_channels") or 1)
    names = tuple(data.get("channel_names") or ())
    schemes = tuple(data.get("channel_normalization") or ())
    if not schemes:
        text = str(data.get("normalization") or "")
        if not text:
            raise CheckpointError(
                f"checkpoint {meta['path']} does not record its intensity normalisation (data.normalization); "
                "re-save it with `arco train`"
            )
        parts = [p.strip() for p in text.split(",")]
        schemes = tuple(parts * n if len(parts) == 1 else parts)
    if len(schemes) != n:
        raise CheckpointError(f"checkpoint {meta['path']}: {len(schemes)} normalisation schemes for {n} channels")
    return n, names, schemes


def _read_all(plan: list[tuple[Any, Path]], schemes: tuple[str, ...], window: tuple, allow_gaps: bool) -> list[str]:
    """Read every scan whole before anything is written (a cut-off file or a NaN fails here, naming the file).
    Returns the slice gaps that ``allow_gaps`` accepted, one sentence each."""
    from tqdm import tqdm

    from arco.data.dicom import check_dicom_series
    from arco.data.io import read_scan

    gaps = []
    for case, _ in tqdm(plan, desc="check", unit="scan", leave=False):
        read_scan(list(case.files), schemes, ct_window=window, allow_slice_gaps=allow_gaps)
        if case.is_dicom and allow_gaps:
            gaps += [f"{case.reference}: {g}" for g in check_dicom_series(case.reference, True).gaps]
    return gaps


def _predict_case(case: Any, target: Path, predict: Any, data: dict, schemes, window, args) -> None:
    from arco.data.formats import NIFTI_SUFFIXES, image_suffix, read_header, write_image
    from arco.data.io import read_scan, write_label_like
    from arco.evaluation import predict_volume

    vol = read_scan(list(case.files), schemes, ct_window=window, allow_slice_gaps=args.allow_slice_gaps)
    label = predict_volume(
        predict,
        vol.image,
        int(data["spatial_dims"]),
        tuple(data["patch_size"]),
        batch_size=args.batch_size,
        device=args.device,
        stride=args.stride,
        overlap=args.overlap,
        blend=args.blend,
    )
    if not case.is_dicom and len(read_header(case.reference)[0]) == 2:
        label = label[0]  # read_scan gave a 2D scan a leading axis of size 1
    if image_suffix(case.reference) in NIFTI_SUFFIXES:
        write_label_like(label, case.reference, target, overwrite=True)
    else:
        dtype = "uint8" if label.max() < 256 else "int16"
        write_image(label.astype(dtype), vol.affine, target, overwrite=True)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arco._checks import ArcoError
    from arco._io import check_out_dir, staged_outputs

    out = check_out_dir(args.out)
    args.device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, args.device)
    in_channels, names, schemes = checkpoint_channels(meta)
    plan = plan_outputs(
        args.input, out, args.suffix, args.overwrite, args.in_place_ok, in_channels, names, args.format,
        args.allow_slice_gaps,
    )  # fmt: skip
    window = tuple((meta.get("config") or {}).get("data", {}).get("ct_window") or (-200.0, 250.0))
    gaps = _read_all(plan, schemes, window, args.allow_slice_gaps)
    predict = predictor_fn(model)
    with staged_outputs(out) as tmp:
        for case, target in tqdm(plan, desc="predict", unit="scan"):
            try:
                _predict_case(case, tmp / target.relative_to(out), predict, meta["data"], schemes, window, args)
            except (ArcoError, ValueError, OSError) as exc:
                raise ArcoError(f"case {case.name} failed: {exc} (nothing was written to {out})") from exc
    print(f"wrote {len(plan)} label file(s) to {out}")
    for g in gaps:
        print(f"note: accepted with --allow-slice-gaps: {g}")
    return 0
