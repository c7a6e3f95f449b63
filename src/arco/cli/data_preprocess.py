"""`arco data preprocess`: nnU-Net-style preprocessing into memory-mappable cases (registered by `arco.cli.data`)."""

from __future__ import annotations

import argparse

__all__ = ["add_subparser"]

EPILOG = """examples:
  arco data preprocess data/Dataset003_Liver --out data/lits-pp --dataset lits --jobs 2
  arco data preprocess data/Task02_Heart --out data/heart-pp --spacing 1.37 1.25 1.25 --crop foreground
  arco train --config nnunet --set data.dataset=preprocessed --set data.root=data/lits-pp --method supervised
Rerunning the same command redoes only the cases whose source files changed; training from a folder whose
source changed stops with an error that says to rerun it.
"""


def add_subparser(verbs: argparse._SubParsersAction) -> None:
    pp = verbs.add_parser(
        "preprocess",
        help="resample, normalise and crop an nnU-Net raw folder into memory-mappable cases (incremental)",
        description="Read every case of an nnU-Net v2 raw folder (imagesTr/labelsTr, and imagesTs with labelsTs), "
        "crop it to the body (or the labelled foreground), normalise it, resample it to one spacing and store it "
        "as memory-mappable .npy files with its geometry, foreground locations for oversampled patches and a "
        "fingerprint of the source. Train from OUT with data.dataset=preprocessed data.root=OUT: nothing is "
        "loaded into memory beyond the patches of a batch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pp.add_argument("src", help="nnU-Net v2 raw folder (dataset.json, imagesTr/, labelsTr/); never written to")
    pp.add_argument("--out", required=True, help="output folder (new, or an earlier output for the same source)")
    pp.add_argument(
        "--dataset",
        default="nnunet",
        choices=("nnunet", "lits", "mmwhs"),
        help="preset of defaults: lits = CT window and 3 classes, mmwhs = z-score and 8 classes (default nnunet: "
        "ct when dataset.json names the channel CT, else zscore)",
    )
    pp.add_argument(
        "--spacing",
        nargs=3,
        type=float,
        default=None,
        metavar=("Z", "Y", "X"),
        help="target spacing in mm, array order (default: the median spacing of the cases, as nnU-Net)",
    )
    pp.add_argument("--no-resample", action="store_true", help="keep every case on its own grid")
    pp.add_argument(
        "--normalization", default="", choices=("", "ct", "zscore", "minmax", "none"), help="default: the preset's"
    )
    pp.add_argument("--ct-window", nargs=2, type=float, default=(-200.0, 250.0), metavar=("LOW", "HIGH"))
    pp.add_argument(
        "--crop",
        default="body",
        choices=("body", "foreground", "none"),
        help="body: box of the voxels above --body-threshold (CT -500 HU, else non-zero); foreground: box of the "
        "label + --margin (uses the ground truth, also on test cases); default body",
    )
    pp.add_argument("--margin", type=int, default=None, help="voxels around the crop box (default 0; foreground 10)")
    pp.add_argument("--body-threshold", type=float, default=None, help="intensity threshold of --crop body")
    pp.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="image storage dtype")
    pp.add_argument("--locations", type=int, default=10000, help="foreground voxels stored per class and case")
    pp.add_argument("--full-hash", action="store_true", help="fingerprint whole source files (default: first/last MiB)")
    pp.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    pp.add_argument("--overwrite", action="store_true", help="redo every case / replace another source's copy")
    pp.set_defaults(func=_preprocess)


def _preprocess(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arco.data.preprocess import preprocess_dataset

    if args.no_resample and args.spacing is not None:
        raise ValueError("--spacing and --no-resample exclude each other; give one")
    spacing = "original" if args.no_resample else ("median" if args.spacing is None else tuple(args.spacing))
    info = preprocess_dataset(
        args.src,
        args.out,
        dataset=args.dataset,
        hash_mode="full" if args.full_hash else "fast",
        jobs=args.jobs,
        overwrite=args.overwrite,
        progress=lambda it, total: tqdm(it, total=total, desc="preprocess", unit="case"),
        spacing=spacing,
        normalization=args.normalization,
        ct_window=tuple(args.ct_window),
        crop=args.crop,
        margin=args.margin,
        body_threshold=args.body_threshold,
        dtype=args.dtype,
        locations=args.locations,
    )
    s = info["settings"]
    target = "original grids" if s["spacing"] is None else "x".join(f"{v:g}" for v in s["spacing"]) + " mm"
    print(
        f"preprocessed {info['cases']} cases into {info['out']} ({info['processed']} done, {info['skipped']} "
        f"unchanged, {len(info['removed'])} removed) in {info['seconds']:.1f} s: spacing {target}, "
        f"normalization {s['normalization']}, crop {s['crop']}, {s['dtype']}"
    )
    return 0
