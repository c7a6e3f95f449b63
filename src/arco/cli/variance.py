"""``arco variance``: Monte-Carlo bias and variance of the NS, SG and SAG mean estimators (paper Thm 3.2), or, with
``--checkpoint RUN``, the variance of L_contrast and of its gradient over sampler draws on a trained ARCO run."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

EPILOG = """examples:
  arco variance --out runs/variance                      # built-in phantom, n = 16 64 256, grid = 2 4 8
  arco variance --image ct.nii.gz --label seg.nii.gz --class 1 --num 64 256 --grid 4 --trials 5000 --out v/

The value averaged is the image intensity over the mask (whole image, or one class of --label); a 3D image
uses 3D sampling. Writes variance.csv and variance.png to --out.

  arco variance --checkpoint runs/t3/runs/sg/seed0/finetune --out runs/var-run          # a trained stage-2 run
  arco variance --checkpoint RUN --samplers ns sg sag --draws 128 --batches 8 --wrt student --out v/

With --checkpoint the run's data, weights and banks are rebuilt (from last.pt); on real training batches
(pseudo-labels and strong views as in training, computed once) L_contrast is evaluated --draws times per sampler at
the same weights, banks and batch (the reference loss: anchors and negatives redrawn; the batch loss: queries
redrawn; a finetune.framework run (simclr, moco, byol, isd, vicreg): its pixels, and the queue keys of moco and
isd, redrawn); the table gives the variance of the loss and the total variance of its gradient (w.r.t. the
representation head, or every student weight with --wrt student) and their ratio to NS. sg-ref/sag-ref (the
reference code's list-position samplers) apply to the batch loss only. Writes contrast_variance.csv/.png."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "variance",
        help="Monte-Carlo variance of the NS / SG / SAG estimators",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", help="2D/3D image (.nii/.nii.gz, .npy, .png); default: built-in phantom")
    p.add_argument("--label", help="label file of the image's shape; use with --class")
    p.add_argument("--class", dest="klass", type=int, help="class index whose pixels form the mask")
    p.add_argument("--num", type=int, nargs="+", default=[16, 64, 256], help="sample sizes n (default: 16 64 256)")
    p.add_argument("--grid", type=int, nargs="+", default=[2, 4, 8], help="cells per axis (default: 2 4 8)")
    p.add_argument("--trials", type=int, default=500, help="Monte-Carlo draws per setting (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the torch.Generator (default: 0)")
    p.add_argument("--out", default="variance", help="output folder for variance.csv/.png (default: ./variance)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    r = p.add_argument_group("a trained run (--checkpoint)")
    r.add_argument("--checkpoint", help="ARCO stage-2 run folder or checkpoint: measure L_contrast's sampler variance")
    r.add_argument(
        "--samplers", nargs="+", help="samplers to compare (default: ns sg sag, and sg-ref sag-ref for the batch loss)"
    )
    r.add_argument("--draws", type=int, default=64, help="sampler draws per batch and sampler (default: 64)")
    r.add_argument("--batches", type=int, default=4, help="training batches averaged over (default: 4)")
    r.add_argument("--wrt", choices=("rep-head", "student"), default="rep-head", help="gradient of L_contrast w.r.t.")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    r.add_argument("--data-root", help="the run's dataset folder, if it moved since training")
    p.set_defaults(func=run)


def _run_checkpoint(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from arco.contrast_variance import format_table, load_run, measure, write_outputs

    if args.image or args.label or args.klass is not None:
        raise ValueError("--checkpoint measures on the run's own data; drop --image/--label/--class")
    if args.draws < 2 or args.batches < 1:
        raise ValueError(f"--draws must be >= 2 and --batches >= 1, got {args.draws} and {args.batches}")
    run = load_run(args.checkpoint, device=args.device, data_root=args.data_root)
    if not args.samplers:
        batch = run.method.cfg.contrast == "batch" and run.method.cfg.framework == "arco"
        args.samplers = ["ns", "sg", "sag", *(("sg-ref", "sag-ref") if batch else ())]
    total = args.draws * args.batches * len(args.samplers)
    with tqdm(total=total, desc="variance", unit="draw", disable=args.no_progress, leave=False) as bar:
        rows = measure(run, args.samplers, args.draws, args.batches, args.seed, args.wrt, progress=bar.update)
    cfg = run.method.cfg
    loss = f"L_contrast {cfg.contrast!r}" if cfg.framework == "arco" else f"framework {cfg.framework!r}"
    print(f"{run.checkpoint} ({run.stage.method}, {loss}, trained with sampler {cfg.sampler!r})")
    print(format_table(rows, args.wrt))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    title = "/".join(Path(run.checkpoint).parts[-5:-2])  # e.g. sg/seed0/finetune
    csv_path, png_path = write_outputs(rows, args.out, title=title)
    print(f"wrote {csv_path} and {png_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arco._io import check_out_dir
    from arco.variance import format_table, load_study_input, run_study, write_outputs

    check_out_dir(args.out)
    if args.checkpoint:
        return _run_checkpoint(args)
    for name in ("num", "grid"):
        bad = [v for v in getattr(args, name) if v < 1]
        if bad:
            raise ValueError(f"--{name} values must be positive integers, got {bad}")
    if args.trials < 2:
        raise ValueError(f"--trials must be at least 2, got {args.trials}")
    values, mask, desc = load_study_input(args.image, args.label, args.klass)
    total = args.trials * len(args.num) * (1 + 2 * len(args.grid))
    with tqdm(total=total, desc="variance", unit="draw", disable=args.no_progress, leave=False) as bar:
        rows = run_study(values, mask, args.num, args.grid, args.trials, args.seed, progress=bar.update)
    print(f"{desc}: {int(mask.sum())} candidates, {values.dim() - 1}D sampling, {args.trials} trials")
    print(format_table(rows))
    csv_path, png_path = write_outputs(rows, args.out, title=desc)
    print(f"wrote {csv_path} and {png_path}")
    return 0
