"""`arco data`: generate the built-in phantoms, convert official downloads, inspect, export and preprocess datasets."""

from __future__ import annotations

import argparse
import json
import time

from arco.cli.data_preprocess import add_subparser as add_preprocess_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="generate phantoms, convert official downloads, inspect and export datasets",
        description="Generate the built-in phantom datasets, convert the official ACDC / LA / MSD downloads, "
        "summarise a dataset folder or export its volumes as NIfTI.",
    )
    verbs = p.add_subparsers(dest="data_verb", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    ph = verbs.add_parser(
        "phantom",
        help="write a synthetic dataset (deterministic under --seed)",
        description="phantom 2d: cardiac-MRI-like slices (bg/RV/Myo/LV) in the ACDC SSL4MIS layout; "
        "phantom 3d: LA-like volumes in the LA UA-MT layout; phantom mp: multi-parametric prostate-MRI-like "
        "cases (T2, ADC, DWI channels; bg/PZ/TZ/lesion) as an nnU-Net v2 raw folder (dataset phantom_mp).",
    )
    ph.add_argument(
        "--kind",
        choices=("2d", "3d", "mp"),
        default="2d",
        help="2d (ACDC-like), 3d (LA-like) or mp (multi-parametric MRI); default 2d",
    )
    ph.add_argument("--out", required=True, help="output folder (must not exist or be empty unless --overwrite)")
    ph.add_argument("--subjects", type=int, default=40, help="number of subjects (default 40)")
    ph.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    ph.add_argument(
        "--size",
        type=int,
        default=0,
        help="in-plane size in pixels (default 128 for 2d, 64 for 3d and mp; 3d depth = 3/4 of it)",
    )
    ph.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    ph.set_defaults(func=_phantom)

    ins = verbs.add_parser(
        "inspect",
        help="summarise a dataset folder and the split a label ratio gives",
        description="Detects the layout (ACDC/SSL4MIS, LA/UA-MT, nnU-Net raw), then prints cases, "
        "slices, class frequencies, intensities, shapes, spacings and the split.",
    )
    ins.add_argument("root", help="dataset folder")
    ins.add_argument(
        "--labeled",
        default=None,
        help="also show the split this labeled count / fraction / id list gives (default: no split)",
    )
    ins.add_argument(
        "--split-rule",
        default="patients",
        choices=("patients", "ssl4mis"),
        help="labeled selection rule (default patients)",
    )
    ins.add_argument("--dataset", default="", help="read the folder as this dataset (e.g. lits) instead of detecting")
    ins.add_argument("--json", action="store_true", help="print the summary as JSON")
    ins.set_defaults(func=_inspect)

    ex = verbs.add_parser(
        "export",
        help="write a split's whole volumes as NIfTI (images/ and labels/)",
        description="Write the val or test cases of a dataset as NIfTI files: OUT/images/<case>.nii.gz (the "
        "normalised image the network sees) and OUT/labels/<case>.nii.gz, e.g. to view them or to run "
        "`arco predict` and `arco evaluate --pred --gt` on them.",
    )
    ex.add_argument("root", help="dataset folder")
    ex.add_argument("--dataset", default="phantom2d", help="dataset kind (phantom2d, acdc, la, nnunet, ...)")
    ex.add_argument("--split", default="test", choices=("test", "val"), help="which cases (default test)")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--overwrite", action="store_true", help="replace existing files")
    ex.set_defaults(func=_export)
    _add_convert(verbs)
    add_preprocess_parser(verbs)


def _add_convert(verbs: argparse._SubParsersAction) -> None:
    cv = verbs.add_parser(
        "convert",
        help="convert an official download (ACDC, LA 2018, MSD) into the layout arco trains on",
        description="acdc RAW: ACDC challenge patientXXX/ folders -> SSL4MIS h5 layout with the standard "
        "70/10/20 lists (dataset acdc). la RAW: 2018 LA challenge <case>/lgemri.nrrd + laendo.nrrd -> UA-MT "
        "mri_norm2.h5 with its crop and z-score, and the UA-MT 80/20 lists (dataset la). msd TASK: a Medical "
        "Segmentation Decathlon TaskXX_Name folder -> nnU-Net v2 raw folder with one file per channel "
        "(dataset nnunet; name --out e.g. Dataset005_Prostate). --out must be empty or new (or --overwrite); "
        "the input is never modified.",
    )
    cv.add_argument("source", choices=("acdc", "la", "msd"), help="which download")
    cv.add_argument("raw", help="the downloaded folder (ACDC database, LA training set, or MSD TaskXX_Name)")
    cv.add_argument("--out", required=True, help="output dataset folder (use it as data.root)")
    cv.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    cv.add_argument("--seed", type=int, default=0, help="acdc/la: seed of the split when the set is not standard")
    cv.add_argument(
        "--frame-names",
        choices=("ssl4mis", "official"),
        default="ssl4mis",
        help="acdc: name ED/ES frames frame01/frame02 as SSL4MIS (default) or keep the frame numbers",
    )
    cv.add_argument("--dataset-id", type=int, help="msd: nnU-Net dataset number (default: the task number)")
    cv.set_defaults(func=_convert)


def _phantom(args: argparse.Namespace) -> int:
    from arco.data.phantom import generate_phantom2d, generate_phantom3d
    from arco.data.phantom_mp import generate_phantom_mp

    gen = {"2d": generate_phantom2d, "3d": generate_phantom3d, "mp": generate_phantom_mp}[args.kind]
    size = args.size or (128 if args.kind == "2d" else 64)
    t0 = time.perf_counter()
    info = gen(args.out, subjects=args.subjects, seed=args.seed, size=size, overwrite=args.overwrite)
    parts = ", ".join(f"{k} {info[k]}" for k in ("train", "val", "test", "train_slices") if k in info)
    if "channels" in info:
        parts += f"; channels {', '.join(info['channels'])} (use data.dataset=phantom_mp or nnunet)"
    print(
        f"wrote {info['kind']} ({args.subjects} subjects, {size} px, seed {args.seed}) to {args.out}: "
        f"{parts} [{time.perf_counter() - t0:.1f} s]"
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from arco.data.convert import convert_acdc, convert_la, convert_msd

    t0 = time.perf_counter()
    if args.source == "acdc":
        info = convert_acdc(args.raw, args.out, args.overwrite, frame_names=args.frame_names, seed=args.seed)
        what = f"{info['frames']} frames, {info['train_slices']} training slices"
        parts = f"train {info['train']}, val {info['val']}, test {info['test']} patients"
    elif args.source == "la":
        info = convert_la(args.raw, args.out, args.overwrite, seed=args.seed)
        what = f"{len(info['cases'])} cases"
        parts = f"train {info['train']}, test {info['test']}"
    else:
        info = convert_msd(args.raw, args.out, args.overwrite, dataset_id=args.dataset_id)
        what = f"{info['name']}: {info['channels']} channel(s)"
        parts = f"{info['training']} training, {info['test']} test cases"
    split = f"; split {info['split']}" if "split" in info else ""
    extra = f"; {info['extra']} further cases in extra.list" if info.get("extra") else ""
    preset = {"acdc": "acdc", "la": "la", "msd": "nnunet"}[args.source]  # presets of the same dataset names
    print(
        f"wrote {what} to {args.out}: {parts}{split}{extra} [{time.perf_counter() - t0:.1f} s]; train with "
        f"`arco train --config {preset} --set data.root={args.out}`"
    )
    return 0


def _split_line(info: dict) -> str:
    split = info["split"]
    if "error" in split:
        return f"split        labeled={split['labeled_spec']}: not possible (see the error below)"
    if split.get("labeled_spec") == "all":
        return f"split        not asked (--labeled N shows one); possible: {info['possible_labeled']}"
    return (
        f"split        labeled={split['labeled_spec']} ({split['rule']}): {len(split['labeled'])} labeled "
        f"({split['num_labeled_items']} items): {', '.join(split['labeled'][:8])}"
        f"{' ...' if len(split['labeled']) > 8 else ''}; {len(split['unlabeled'])} unlabeled "
        f"({split['num_unlabeled_items']} items); val {len(split['val'])}; test {len(split['test'])}"
    )


def _inspect(args: argparse.Namespace) -> int:
    from arco.cli import _fail
    from arco.data.summary import inspect_dataset

    info = inspect_dataset(args.root, labeled=args.labeled, split_rule=args.split_rule, dataset=args.dataset)
    if args.json:
        print(json.dumps(info, indent=2))
        return 2 if "error" in info["split"] else 0
    classes = ", ".join(f"{n} {p:.2f}%" for n, p in zip(info["classes"], info["class_percent"]))
    cases = info["cases"]
    ranges = [
        f"{name} min {r['min']:.3g}, max {r['max']:.3g}, mean {r['mean']:.3g} ({norm})"
        for name, r, norm in zip(info["channels"], info["channel_intensity"], info["channel_normalization"])
    ]
    lines = [
        f"dataset      {info['root']} ({info['layout']} layout, {info['spatial_dims']}D)",
        f"cases        train {cases['train']}, val {cases['val']}, test {cases['test']}; "
        f"{info['train_items']} training {info['item_kind']}, {info['val_test_slices']} val/test slices",
        f"channels     {len(info['channels'])}: {', '.join(info['channels'])}",
        f"classes      {classes}",
        f"intensity    {'; '.join(ranges)} (after normalization)",
        f"shapes       train {info['train_shapes']}; val/test {', '.join(info['val_test_shapes'])}",
        f"spacings     {info['spacings'] or 'not stored (h5 layout)'}",
        _split_line(info),
    ]
    print("\n".join(lines))
    if "error" in info["split"]:
        return _fail(info["split"]["error"])
    return 0


def _export(args: argparse.Namespace) -> int:
    from arco.data.config import DataConfig
    from arco.data.export import export_nifti

    cfg = DataConfig(dataset=args.dataset, root=args.root, generate=False, labeled="1")
    cases = export_nifti(cfg, args.split, args.out, overwrite=args.overwrite)
    print(f"wrote {len(cases)} {args.split} cases to {args.out}/images and {args.out}/labels: {', '.join(cases)}")
    return 0
