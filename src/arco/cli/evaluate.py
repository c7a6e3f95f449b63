"""`arco evaluate`: score a checkpoint on its test (or val) split, or score prediction files against labels.

Two modes:

- ``arco evaluate --checkpoint RUN_OR_PT --out DIR [--split test|val] [--data-root DIR] [--compat reference]``
  rebuilds the dataset from the checkpoint's config and evaluates the predictor on whole volumes.
- ``arco evaluate --pred DIR --gt DIR --out DIR [--labels dataset.json | --class-names RV,Myo,LV]
  [--num-classes C]`` scores label files (NIfTI, NRRD, MHA) matched by case name (the file name without its
  extension); shapes and affines must agree (1e-4), and the GT spacing adds millimetre distances. Class
  names come from an nnU-Net v2 or MSD ``dataset.json`` (``--labels``) or from ``--class-names`` (foreground
  names, or all names starting with the background); they also fix the number of classes.

Both write ``per_case.csv``, ``summary.json``, ``summary.md``, overlay PNGs and ``report.html`` into ``--out``
and print the summary. Outputs are all or nothing: they are written to a temporary folder and moved into ``--out``
only when every case was scored, so a failure leaves ``--out`` as it was. ``--data-root`` must be an existing
dataset folder: a missing one is an error (arco never generates a phantom in its place).

- ``arco evaluate --compare RUN1 RUN2 ... --out DIR`` evaluates several runs on the same split (the data of the
  first, which is also the reference) and writes each run's evaluation into ``DIR/<run>/``, the paired
  differences to the first run, ``qualitative.png`` (the first run's median and worst case, with every run's
  prediction of the same slice and its Dice), ``curves.png`` and ``DIR/report.html``. Name a run ``NAME=PATH``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

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


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Dice / Jaccard / HD95 / ASD of a checkpoint or of prediction files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("what to evaluate (one of)")
    src.add_argument("--checkpoint", help="run folder (uses checkpoints/best.pt) or .pt file")
    src.add_argument("--pred", help="folder of predicted label files (NIfTI, NRRD or MHA)")
    src.add_argument("--gt", help="folder of ground-truth label files (same case names as --pred)")
    src.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="several run folders (or NAME=RUN) on the same split; the first is the reference",
    )
    p.add_argument("--out", required=True, help="output folder for per_case.csv, summary.* and overlays")
    p.add_argument("--split", choices=("test", "val"), default="test", help="--checkpoint: split to evaluate")
    p.add_argument("--data-root", help="--checkpoint: dataset folder, if it moved since training")
    p.add_argument("--num-classes", type=int, help="classes incl. background (checked against the checkpoint)")
    p.add_argument("--labels", metavar="DATASET_JSON", help="--pred/--gt: class names from a dataset.json")
    p.add_argument("--class-names", metavar="A,B,...", help="--pred/--gt: class names, e.g. RV,Myo,LV")
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
    from arco._io import check_out_dir, staged_outputs

    if args.compare:
        return _run_compare(args)
    if bool(args.checkpoint) == bool(args.pred or args.gt):
        raise ValueError(
            "give either --checkpoint RUN_OR_PT, --pred DIR together with --gt DIR, or --compare RUN1 RUN2 ..."
        )
    if args.num_classes is not None and args.num_classes < 2:
        raise ValueError(f"--num-classes must be >= 2, got {args.num_classes}")
    if args.overlays < 0:
        raise ValueError(f"--overlays must be >= 0, got {args.overlays}")
    if not args.checkpoint and not (args.pred and args.gt):
        raise ValueError("--pred and --gt go together: give both folders")
    out = check_out_dir(args.out)
    with staged_outputs(out) as tmp:
        result = _run_checkpoint(args, tmp) if args.checkpoint else _run_files(args, tmp)
    result.files = {k: out / Path(v).name for k, v in result.files.items()}
    print(result.to_markdown())
    n_overlays = sum(k.startswith("overlay") for k in result.files)
    print(f"\nwrote per_case.csv, summary.json, summary.md and {n_overlays} overlay PNG(s) to {out}")
    print(f"open {out / 'report.html'}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arco.compare import compare_runs
    from arco.evaluation import check_writable

    if args.checkpoint or args.pred or args.gt:
        raise ValueError("--compare takes the runs itself; leave out --checkpoint, --pred and --gt")
    if args.overlays < 0:
        raise ValueError(f"--overlays must be >= 0, got {args.overlays}")
    out = check_writable(args.out)
    s = compare_runs(
        args.compare,
        out,
        split=args.split,
        data_root=args.data_root,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        overlays=args.overlays,
        progress=lambda it: tqdm(it, desc=f"evaluate {args.split}", unit="case", leave=False),
    )
    print(f"{args.split} mean foreground Dice (reference: {s['reference']}):")
    for name, r in s["runs"].items():
        print(f"  {name}: {r['mean']['dice']:.4f}")
    for d in s["differences"]:
        print(
            f"  {d['run']} - {d['reference']}: {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], "
            f"Wilcoxon p {d['p_wilcoxon']:.3f}, {d['n']} cases"
        )
    print(f"\nwrote each run's evaluation, qualitative.png, comparison.json and report.html to {out}")
    print(f"open {out / 'report.html'}")
    return 0


def _run_checkpoint(args: argparse.Namespace, out: Path) -> Any:
    from tqdm import tqdm

    from arco._checks import CheckpointError, DataError
    from arco.data import DataConfig, build_data
    from arco.evaluation import evaluate_model

    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device, args.num_classes)
    data_meta = meta["data"]
    cfg = dict((meta.get("config") or {}).get("data") or {})
    if not cfg:
        raise CheckpointError(f"checkpoint {meta['path']} holds no data config; re-save it with `arco train`")
    if args.data_root:
        root = Path(args.data_root)
        if not root.is_dir():
            from arco._checks import path_problem

            problem = path_problem(root) if not root.exists() else "is a file, not a folder"
            raise DataError(
                f"--data-root {root} {problem}; give the folder of the {cfg.get('dataset')!r} dataset the run was "
                f"trained on (recorded: {cfg.get('root') or '(none)'}). arco never generates data in its place"
            )
        cfg["root"] = str(root)
    cfg["generate"] = False  # evaluate the data that is there, never a freshly generated phantom
    for key, value in cfg.items():
        if isinstance(value, list):
            cfg[key] = tuple(value)
    data = build_data(DataConfig(**cfg))
    if int(data.num_classes) != int(data_meta["num_classes"]):
        raise CheckpointError(
            f"checkpoint {meta['path']} predicts {data_meta['num_classes']} classes but dataset "
            f"{cfg.get('dataset')!r} under {cfg.get('root')!r} has {data.num_classes}; check --data-root"
        )
    if int(data.in_channels) != int(data_meta.get("in_channels") or 1):
        raise CheckpointError(
            f"checkpoint {meta['path']} takes {data_meta.get('in_channels') or 1} input channel(s) but dataset "
            f"{cfg.get('dataset')!r} under {cfg.get('root')!r} has {data.in_channels} {list(data.channel_names)}; "
            "check --data-root"
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
        report_meta={
            "title": f"Evaluation of {args.checkpoint}",
            "source": [("checkpoint", str(meta["path"])), ("split", args.split), ("data", cfg.get("root"))],
            "config": meta.get("config"),
        },
    )


def match_label_files(pred_dir: Path, gt_dir: Path) -> list[tuple[str, Path, Path]]:
    """Pair label files by case name and check their geometry from the headers (shape, affine within 1e-4)."""
    import numpy as np

    from arco._checks import DataError
    from arco.data.cases import list_images
    from arco.data.formats import image_stem, read_header

    def by_case(folder: Path, what: str) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for f in list_images(folder, what):
            if f.is_dir():
                raise ValueError(f"{what} folder {folder}: {f} is a DICOM series; label files must be NIfTI/NRRD/MHA")
            if image_stem(f) in files:
                raise DataError(f"{what} folder {folder}: {files[image_stem(f)].name} and {f.name} name one case")
            files[image_stem(f)] = f
        return files

    preds, gts = by_case(pred_dir, "--pred"), by_case(gt_dir, "--gt")
    only_p, only_g = sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))
    if only_p or only_g:
        raise DataError(
            f"--pred {pred_dir} and --gt {gt_dir} must hold the same cases; "
            + (f"missing in --gt: {', '.join(preds[c].name for c in only_p[:5])}. " if only_p else "")
            + (f"missing in --pred: {', '.join(gts[c].name for c in only_g[:5])}." if only_g else "")
        )
    pairs = []
    for case in sorted(gts):
        (p_shape, p_aff), (g_shape, g_aff) = read_header(preds[case]), read_header(gts[case])
        if p_shape != g_shape or not np.allclose(p_aff, g_aff, atol=_AFFINE_ATOL):
            raise DataError(
                f"geometry differs between {preds[case]} (shape {p_shape[::-1]}) and {gts[case]} "
                f"(shape {g_shape[::-1]}): shape and affine must agree within {_AFFINE_ATOL}; "
                "resample the prediction onto the label grid"
            )
        pairs.append((case, preds[case], gts[case]))
    return pairs


def _read_label(path: Path) -> Any:
    import numpy as np

    from arco._checks import DataError
    from arco.data.io import read_image

    arr, _, spacing = read_image(path)
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{path}: label file holds non-integer values; expected class indices")
    return arr.astype(np.int64), spacing


def class_names_from(labels: str | None, class_names: str | None) -> list[str] | None:
    """Class names (background first) from ``--labels dataset.json`` or ``--class-names``; None if neither."""
    import json

    from arco._checks import DataError

    if labels and class_names:
        raise ValueError("give --labels or --class-names, not both")
    if class_names:
        names = [n.strip() for n in class_names.split(",")]
        if not all(names):
            raise ValueError(f"--class-names {class_names!r} has an empty name; give e.g. RV,Myo,LV")
        return names if names[0].lower() in ("background", "bg") else ["background", *names]
    if not labels:
        return None
    path = Path(labels)
    if not path.is_file():
        from arco._checks import path_problem

        raise FileNotFoundError(f"--labels {path} {path_problem(path)}; give a dataset.json with a 'labels' mapping")
    try:
        mapping = json.loads(path.read_text()).get("labels")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise DataError(f"--labels {path}: not a JSON object with 'labels' ({exc})") from exc
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"--labels {path}: no 'labels' mapping (nnU-Net v2 {{name: value}} or MSD {{value: name}})")
    try:  # nnU-Net v2 {"background": 0, ...} or MSD {"0": "background", ...}
        by_value = (
            {int(v): str(k) for k, v in mapping.items()}
            if all(isinstance(v, int) for v in mapping.values())
            else {int(k): str(v) for k, v in mapping.items()}
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"--labels {path}: 'labels' must map names to integers (region labels unsupported)") from exc
    if sorted(by_value) != list(range(len(by_value))):
        raise DataError(f"--labels {path}: label values {sorted(by_value)} must be 0..C-1 without gaps")
    return [by_value[i] for i in range(len(by_value))]


def _run_files(args: argparse.Namespace, out: Path) -> Any:
    from arco._checks import DataError
    from arco.evaluation import evaluate_arrays

    names = class_names_from(args.labels, args.class_names)
    pairs = match_label_files(Path(args.pred), Path(args.gt))
    num_classes = args.num_classes
    if names is not None:
        if num_classes is not None and num_classes != len(names):
            raise ValueError(
                f"--num-classes {num_classes} but the class names give {len(names)} classes {names}; drop one"
            )
        num_classes = len(names)
    if num_classes is None:  # first pass over the files: the largest label seen
        num_classes = max(2, *(int(_read_label(f)[0].max()) + 1 for _, p, g in pairs for f in (p, g)))

    def cases():
        for case_id, p, g in pairs:
            (pred, _), (gt, spacing) = _read_label(p), _read_label(g)
            for arr, f in ((pred, p), (gt, g)):
                if arr.min() < 0 or arr.max() >= num_classes:
                    source = "--labels/--class-names" if names is not None else "--num-classes"
                    raise DataError(f"{f}: labels {arr.min()}..{arr.max()} outside 0..{num_classes - 1} ({source})")
            yield case_id, pred, gt, spacing

    return evaluate_arrays(
        cases(),
        num_classes=num_classes,
        class_names=names,
        compat=args.compat,
        out_dir=out,
        overlays=args.overlays,
        report_meta={
            "title": f"Evaluation of {args.pred}",
            "source": [("predictions", str(args.pred)), ("ground truth", str(args.gt))],
        },
    )
