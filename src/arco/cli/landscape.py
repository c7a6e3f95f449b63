"""``arco landscape``: loss landscapes of a trained run. ``pixels``: the per-pixel L_contrast of an ARCO stage-2 run on
test slices (paper Fig. 3); ``weights``: the loss surface around the final weights along two filter-normalised
random directions (Li et al., NeurIPS 2018; paper App. M)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run_pixels", "run_weights"]

EPILOG = """examples:
  arco landscape pixels --checkpoint runs/demo/arco/finetune --out landscape/          # one case showing every class
  arco landscape pixels --checkpoint RUN --case patient001 --slice 5 --sampler ns --seed 1 --out landscape/
  arco landscape weights --checkpoint runs/demo/arco/finetune --out landscape/         # 11 x 11 grid, span 1
  arco landscape weights --checkpoint runs/demo/supervised --steps 21 --span 0.5 --out landscape-sup/

See docs/landscapes.md for what each value is."""

PIXELS = """Every pixel of a test slice is an anchor of its ground-truth class: the student's representation against the
class's positive (the EMA teacher's mean representation over the slice's pixels of that class) and num_negatives keys
drawn from the class's bank (last.pt) by the run's sampler with a generator seeded by --seed; the value is that
anchor's cross-entropy (its term in L_contrast). Both networks in eval mode on the clean slice (2D: resized to the
patch size; 3D: one window holding the slice). Default slice: the first test case with a slice showing every class,
the slice whose rarest class is largest. Writes pixels_<case>_s<k>.png/.npy/.csv and pixels.json to --out. Needs a
run trained with finetune.framework=arco and finetune.contrast=reference."""

WEIGHTS = """f(a, b) = L(theta + a d1 + b d2) on a --steps x --steps grid over [-span, span]^2; d1, d2 Gaussian
(--seed), each filter rescaled to the norm of the weights' filter, biases and BatchNorm parameters not moved (Li et
al.). L: loss_sup = CE + Dice on the validation cases (any run) and loss_contrast = the run's L_contrast on --batches
real stage-2 batches at fixed draws (ARCO stage-2 runs). Networks in eval mode; the final weights (last.pt).
Sharpness = mean rise f - f(0, 0) over the grid points within --radius (default span / 2, at least one grid step).
Writes weights_contour.png, weights_surface.png, weights_surface.csv and weights.json to --out."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run stage folder or checkpoint (last.pt is used)")
    p.add_argument("--out", default="landscape", help="output folder (default: ./landscape)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws / directions (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--data-root", help="the run's dataset folder, if it moved since training")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the run's engine.threads; 0: torch's)")


def _threads(requested: int | None, trained: int) -> None:
    import torch

    threads = trained if requested is None else requested
    if threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    if threads > 0:  # as the engine does: oversubscribed threads on a busy machine cost far more than they give
        torch.set_num_threads(threads)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "landscape",
        help="per-pixel L_contrast (pixels) and the loss surface around the final weights (weights)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="landscape", metavar="KIND", required=True)
    px = verbs.add_parser("pixels", help="per-pixel L_contrast on test slices (paper Fig. 3)", description=PIXELS)
    _common(px)
    px.add_argument("--case", action="append", help="test case id (repeatable; default: one showing every class)")
    px.add_argument("--slice", type=int, help="slice index along the first array axis (default: per case, see above)")
    px.add_argument("--sampler", choices=("ns", "sg", "sag"), help="bank sampler (default: the run's)")
    px.add_argument("--split", choices=("test", "val"), default="test", help="cases of this split (default: test)")
    px.set_defaults(func=run_pixels)
    wt = verbs.add_parser("weights", help="loss surface around the final weights (Li et al. 2018)",
                          description=WEIGHTS)  # fmt: skip
    _common(wt)
    wt.add_argument("--steps", type=int, default=11, help="grid points per axis, odd (default: 11)")
    wt.add_argument("--span", type=float, default=1.0, help="grid half-width in direction units (default: 1.0)")
    wt.add_argument(
        "--radius", type=float, help="radius of the sharpness summary (default: span / 2, at least one grid step)"
    )
    wt.add_argument("--batches", type=int, default=2, help="stage-2 batches of loss_contrast (default: 2)")
    wt.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    wt.set_defaults(func=run_weights)


def run_pixels(args: argparse.Namespace) -> int:
    from arco.contrast_variance import load_run
    from arco.landscape import check_pixel_run, pixel_landscape, write_pixels

    if args.slice is not None and args.slice < 0:
        raise ValueError(f"--slice must be >= 0, got {args.slice}")
    run = load_run(args.checkpoint, device=args.device, data_root=args.data_root)
    check_pixel_run(run.method)
    _threads(args.threads, run.cfg.engine.threads)
    items = pixel_landscape(run, args.case, args.slice, args.seed, args.sampler, args.split)
    meta = {"checkpoint": str(run.checkpoint), "iteration": run.iteration, "seed": args.seed,
            "sampler": items[0].strategy, "split": args.split}  # fmt: skip
    pngs = write_pixels(items, args.out, meta)
    print(f"{run.checkpoint}: per-pixel L_contrast ({items[0].strategy} bank draws, seed {args.seed})")
    for item, png in zip(items, pngs):
        means = ", ".join(f"{k} {v:.4f}" for k, v in item.class_means().items())
        print(f"  {item.case_id} slice {item.slice_index}: class means {means} -> {png}")
    return 0


def run_weights(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arco.landscape import grid_coordinates, load_model, weight_landscape, write_weights

    grid_coordinates(args.steps, args.span)  # checks --steps / --span before loading anything
    if args.radius is not None and args.radius <= 0:
        raise ValueError(f"--radius must be > 0, got {args.radius}")
    if args.batches < 1:
        raise ValueError(f"--batches must be >= 1, got {args.batches}")
    model = load_model(args.checkpoint, device=args.device, data_root=args.data_root)
    _threads(args.threads, model.threads)
    with tqdm(total=args.steps**2, desc="landscape", unit="point", disable=args.no_progress, leave=False) as bar:
        result = weight_landscape(model, args.steps, args.span, args.seed, args.batches, args.radius, bar.update)
    paths = write_weights(result, args.out, {"batches": args.batches})
    print(f"{result.checkpoint} ({result.stage_method}): {args.steps} x {args.steps} grid over "
          f"[-{args.span:g}, {args.span:g}]^2 in {result.seconds:.1f} s")  # fmt: skip
    sharp = result.sharpness()
    for name, value in result.centre().items():
        print(f"  {name}: at the weights {value:.5f}, sharpness(r={result.radius:g}) {sharp[name]:.5f}")
    for note in result.notes:
        print(f"  note: {note}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
