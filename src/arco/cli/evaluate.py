"""`arco evaluate`: score a checkpoint on its test (or val) split, or score prediction files against labels.

Two modes:

- ``arco evaluate --checkpoint RUN_OR_PT --out DIR [--split test|val] [--data-root DIR] [--compat reference]``
  rebuilds the dataset from the checkpoint's config and evaluates the predictor on whole volumes.
- ``arco evaluate --pred DIR --gt DIR --out DIR [--num-classes C]`` scores NIfTI label files matched by file
  name; shapes and affines must agree (1e-4), and the GT header spacing adds millimetre distances.

Both write ``per_case.csv``, ``summary.json``, ``summary.md`` and overlay PNGs into ``--out`` and print the
summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_AFFINE_ATOL = 1e-4

# The helpers below are shared with `arco predict`.


def add_inference_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--batch-size", type=int, default=16, help="slices (2D) or windows (3D) per forward pass")
    g.add_argument(
        "--stride",
        type=int,
        nargs="+",
        metavar="N",
        help="3D sliding-window stride in array order (D H W); the reference LA protocol is 4 18 18. "
        "Default: --overlap",
    )
    g.add_argument("--overlap", type=float, default=0.5, help="3D window overlap fraction (default 0.5)")
    g.add_argument("--blend", choices=("gaussian", "constant"), default="gaussian", help="3D window blending")


def resolve_device(name: str) -> str:
    """``--device`` checked by the one :func:`arco._device.resolve_device` (as a string for the evaluation API)."""
    from arco._device import resolve_device as resolve

    try:
        return str(resolve(name))
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from exc


def load_model(checkpoint: str, device: str, num_classes: int | None = None) -> tuple[Any, dict[str, Any]]:
    """``load_predictor`` + device move + the ``--num-classes`` consistency check."""
    from arco._checks import CheckpointError
    from arco.checkpoint import load_predictor

    model, meta = load_predictor(checkpoint, map_location="cpu")
    data = meta.get("data") or {}
    for key in ("spatial_dims", "num_classes", "patch_size"):
        if not data.get(key):
            raise CheckpointError(f"checkpoint {meta['path']} has no data.{key}; re-save it with `arco train`")
    if num_classes is not None and int(num_classes) != int(data["num_classes"]):
        raise CheckpointError(
            f"checkpoint {meta['path']} predicts {data['num_classes']} classes "
            f"but --num-classes is {num_classes}; "
            "use the checkpoint trained for this label set or drop --num-classes"
        )
    return model.to(device), meta


def predictor_fn(model: Any) -> Any:
    return lambda x: model(x).logits


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.name[: -len(".nii")]


def list_nifti(folder: Path, what: str) -> list[Path]:
    """NIfTI files of ``folder`` (sorted); any other visible file is an error naming it."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    files, others = [], []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.is_dir():
            continue
        (files if is_nifti(f) else others).append(f)
    if others:
        raise ValueError(
            f"{what} folder {folder} holds files that are not NIfTI (.nii/.nii.gz): "
            + ", ".join(str(o) for o in others[:5])
            + ("..." if len(others) > 5 else "")
            + "; move them away"
        )
    if not files:
        raise ValueError(f"{what} folder {folder} holds no NIfTI files (.nii/.nii.gz)")
    return files


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Dice / Jaccard / HD95 / ASD of a checkpoint or of prediction files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("what to evaluate (one of)")
    src.add_argument("--checkpoint", help="run folder (uses checkpoints/best.pt) or .pt file")
    src.add_argument("--pred", help="folder of predicted label NIfTI files")
    src.add_argument("--gt", help="folder of ground-truth label NIfTI files (same file names as --pred)")
    p.add_argument("--out", required=True, help="output folder for per_case.csv, summary.* and overlays")
    p.add_argument("--split", choices=("test", "val"), default="test", help="--checkpoint: split to evaluate")
    p.add_argument("--data-root", help="--checkpoint: dataset folder, if it moved since training")
    p.add_argument("--num-classes", type=int, help="classes incl. background (checked against the checkpoint)")
    p.add_argument(
        "--compat",
        choices=("default", "reference"),
        default="default",
        help="empty-mask policy: 'reference' reproduces SSL4MIS/ARCO calculate_metric_percase",
    )
    p.add_argument("--overlays", type=int, default=3, help="overlay PNGs (3: worst, median, best case)")
    add_inference_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arco.evaluation import check_writable

    if bool(args.checkpoint) == bool(args.pred or args.gt):
        raise ValueError("give either --checkpoint RUN_OR_PT, or --pred DIR together with --gt DIR")
    if args.num_classes is not None and args.num_classes < 2:
        raise ValueError(f"--num-classes must be >= 2, got {args.num_classes}")
    if args.overlays < 0:
        raise ValueError(f"--overlays must be >= 0, got {args.overlays}")
    if not args.checkpoint and not (args.pred and args.gt):
        raise ValueError("--pred and --gt go together: give both folders")
    out = check_writable(args.out)
    result = _run_checkpoint(args, out) if args.checkpoint else _run_files(args, out)
    print(result.to_markdown())
    n_overlays = sum(k.startswith("overlay") for k in result.files)
    print(f"\nwrote per_case.csv, summary.json, summary.md and {n_overlays} overlay PNG(s) to {out}")
    return 0


def _run_checkpoint(args: argparse.Namespace, out: Path) -> Any:
    from tqdm import tqdm

    from arco._checks import CheckpointError
    from arco.data import DataConfig, build_data
    from arco.evaluation import evaluate_model

    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device, args.num_classes)
    data_meta = meta["data"]
    cfg = dict((meta.get("config") or {}).get("data") or {})
    if not cfg:
        raise CheckpointError(f"checkpoint {meta['path']} holds no data config; re-save it with `arco train`")
    if args.data_root:
        cfg["root"] = str(args.data_root)
    for key, value in cfg.items():
        if isinstance(value, list):
            cfg[key] = tuple(value)
    data = build_data(DataConfig(**cfg))
    if int(data.num_classes) != int(data_meta["num_classes"]):
        raise CheckpointError(
            f"checkpoint {meta['path']} predicts {data_meta['num_classes']} classes but dataset "
            f"{cfg.get('dataset')!r} under {cfg.get('root')!r} has {data.num_classes}; check --data-root"
        )
    volumes = list(getattr(data, args.split))
    if not volumes:
        raise ValueError(f"the {args.split} split of {cfg.get('dataset')!r} is empty; nothing to evaluate")
    return evaluate_model(
        model,
        volumes,
        num_classes=int(data_meta["num_classes"]),
        spatial_dims=int(data_meta["spatial_dims"]),
        patch_size=tuple(data_meta["patch_size"]),
        class_names=data_meta.get("class_names") or getattr(data, "class_names", None) or None,
        compat=args.compat,
        out_dir=out,
        overlays=args.overlays,
        batch_size=args.batch_size,
        device=device,
        stride=args.stride,
        overlap=args.overlap,
        blend=args.blend,
        progress=lambda it: tqdm(it, desc=f"evaluate {args.split}", unit="case"),
    )


def match_label_files(pred_dir: Path, gt_dir: Path) -> list[tuple[str, Path, Path]]:
    """Pair NIfTI files by name and check their geometry from the headers (shape, affine within 1e-4)."""
    import nibabel as nib
    import numpy as np

    from arco._checks import DataError

    preds = {f.name: f for f in list_nifti(pred_dir, "--pred")}
    gts = {f.name: f for f in list_nifti(gt_dir, "--gt")}
    only_p, only_g = sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))
    if only_p or only_g:
        raise DataError(
            f"--pred {pred_dir} and --gt {gt_dir} must hold the same file names; "
            + (f"missing in --gt: {', '.join(only_p[:5])}. " if only_p else "")
            + (f"missing in --pred: {', '.join(only_g[:5])}." if only_g else "")
        )
    pairs = []
    for name in sorted(gts):
        p_img, g_img = nib.load(str(preds[name])), nib.load(str(gts[name]))
        if tuple(p_img.shape) != tuple(g_img.shape) or not np.allclose(p_img.affine, g_img.affine, atol=_AFFINE_ATOL):
            raise DataError(
                f"geometry differs between {preds[name]} (shape {tuple(p_img.shape)}) and {gts[name]} "
                f"(shape {tuple(g_img.shape)}): shape and affine must agree within {_AFFINE_ATOL}; "
                "resample the prediction onto the label grid"
            )
        pairs.append((nifti_stem(gts[name]), preds[name], gts[name]))
    return pairs


def _read_label(path: Path) -> Any:
    import numpy as np

    from arco._checks import DataError
    from arco.data.io import read_nifti

    arr, _, spacing = read_nifti(path)
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{path}: label file holds non-integer values; expected class indices")
    return arr.astype(np.int64), spacing


def _run_files(args: argparse.Namespace, out: Path) -> Any:
    from arco._checks import DataError
    from arco.evaluation import evaluate_arrays

    pairs = match_label_files(Path(args.pred), Path(args.gt))
    num_classes = args.num_classes
    if num_classes is None:  # first pass over the files: the largest label seen
        num_classes = max(2, *(int(_read_label(f)[0].max()) + 1 for _, p, g in pairs for f in (p, g)))

    def cases():
        for case_id, p, g in pairs:
            (pred, _), (gt, spacing) = _read_label(p), _read_label(g)
            for arr, f in ((pred, p), (gt, g)):
                if arr.min() < 0 or arr.max() >= num_classes:
                    raise DataError(
                        f"{f}: labels {arr.min()}..{arr.max()} outside 0..{num_classes - 1} (--num-classes)"
                    )
            yield case_id, pred, gt, spacing

    return evaluate_arrays(cases(), num_classes=num_classes, compat=args.compat, out_dir=out, overlays=args.overlays)
