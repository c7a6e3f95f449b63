"""`arco data`: generate the built-in phantoms, inspect and export dataset folders, preprocess nnU-Net folders."""

from __future__ import annotations

import argparse
import json
import time

from arco.cli.data_preprocess import add_subparser as add_preprocess_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="generate phantom datasets and inspect dataset folders",
        description="Generate the built-in phantom datasets or summarise a dataset folder.",
    )
    verbs = p.add_subparsers(dest="data_verb", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    ph = verbs.add_parser(
        "phantom",
        help="write a synthetic dataset (deterministic under --seed)",
        description="phantom 2d: cardiac-MRI-like slices (bg/RV/Myo/LV) in the ACDC SSL4MIS layout; "
        "phantom 3d: LA-like volumes in the LA UA-MT layout.",
    )
    ph.add_argument("--kind", choices=("2d", "3d"), default="2d", help="2d (ACDC-like) or 3d (LA-like); default 2d")
    ph.add_argument("--out", required=True, help="output folder (must not exist or be empty unless --overwrite)")
    ph.add_argument("--subjects", type=int, default=40, help="number of subjects (default 40)")
    ph.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    ph.add_argument(
        "--size",
        type=int,
        default=0,
        help="in-plane size in pixels (default 128 for 2d, 64 for 3d; 3d depth = 3/4 of it)",
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
    ins.add_argument("--labeled", default="3", help="labeled cases: a count, a fraction, 'all' or ids (default 3)")
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
    add_preprocess_parser(verbs)


def _phantom(args: argparse.Namespace) -> int:
    from arco.data.phantom import generate_phantom2d, generate_phantom3d

    gen = generate_phantom2d if args.kind == "2d" else generate_phantom3d
    size = args.size or (128 if args.kind == "2d" else 64)
    t0 = time.perf_counter()
    info = gen(args.out, subjects=args.subjects, seed=args.seed, size=size, overwrite=args.overwrite)
    parts = ", ".join(f"{k} {info[k]}" for k in ("train", "val", "test", "train_slices") if k in info)
    print(
        f"wrote phantom{args.kind} ({args.subjects} subjects, {size} px, seed {args.seed}) to {args.out}: "
        f"{parts} [{time.perf_counter() - t0:.1f} s]"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from arco.data.summary import inspect_dataset

    info = inspect_dataset(args.root, labeled=args.labeled, split_rule=args.split_rule, dataset=args.dataset)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    split = info["split"]
    classes = ", ".join(f"{n} {p:.2f}%" for n, p in zip(info["classes"], info["class_percent"]))
    rng, cases = info["intensity"], info["cases"]
    lines = [
        f"dataset      {info['root']} ({info['layout']} layout, {info['spatial_dims']}D)",
        f"cases        train {cases['train']}, val {cases['val']}, test {cases['test']}; "
        f"{info['train_items']} training {info['item_kind']}, {info['val_test_slices']} val/test slices",
        f"classes      {classes}",
        f"intensity    min {rng['min']:.3g}, max {rng['max']:.3g}, mean {rng['mean']:.3g} "
        f"(normalization {info['normalization']})",
        f"shapes       train {info['train_shapes']}; val/test {', '.join(info['val_test_shapes'])}",
        f"spacings     {info['spacings'] or 'not stored (h5 layout)'}",
        f"split        labeled={split['labeled_spec']} ({split['rule']}): {len(split['labeled'])} labeled "
        f"({split['num_labeled_items']} items): {', '.join(split['labeled'][:8])}"
        f"{' ...' if len(split['labeled']) > 8 else ''}; {len(split['unlabeled'])} unlabeled "
        f"({split['num_unlabeled_items']} items); val {len(split['val'])}; test {len(split['test'])}",
    ]
    print("\n".join(lines))
    return 0


def _export(args: argparse.Namespace) -> int:
    from arco.data.config import DataConfig
    from arco.data.export import export_nifti

    cfg = DataConfig(dataset=args.dataset, root=args.root, generate=False, labeled="1")
    cases = export_nifti(cfg, args.split, args.out, overwrite=args.overwrite)
    print(f"wrote {len(cases)} {args.split} cases to {args.out}/images and {args.out}/labels: {', '.join(cases)}")
    return 0
