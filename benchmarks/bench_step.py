"""ARCO stage-2 (arco-finetune) training step per L_contrast and sampler, against the network-only floor measured in
the same run.

For each loss (``finetune.contrast``: ``reference``, the reference code's hard-negative loss with its full-size banks
of 50 000 / 30 000 keys per class; ``batch``, arco 0.1's loss with a bank of ``--bank`` keys per class) and each
sampler it reports ms per step (the engine's own step: forward under the engine's precision, backward, fused SGD,
EMA teachers and bank updates), the peak memory and the *contrastive share*: the fraction of the step spent in
L_contrast's call (``ArcoFinetuneMethod.contrast_loss``: the masks, the teacher's dense map and the bank push for
``reference``; sampling, the representation at the sampled pixels and InfoNCE against the banks for both), timed
around that call with device synchronisation. The *network-only* row is the floor: the student's forward/backward on
the labeled + strong unlabeled batch (a supervised loss on it), the teacher's forwards on the weak and the mixed
batch, the SGD step and the EMA update, no ARCO loss. The banks are full (random unit keys, all valid) before timing,
as after the first steps of a run; every pseudo-label counts (confidence 0) and every candidate may be an anchor
(``delta_p`` 0), the heaviest case for both losses. Besides the wall time per step the table gives the process CPU
time per step (with ``--threads 1`` the two agree on an idle machine; on a shared one the CPU time is the steadier
figure) and the ratio to the network floor in CPU time.

The contrastive share times the loss *call* (its forward; sampling, head and InfoNCE), not its backward, which runs
inside the step's ``backward()``. ``--ablate`` adds, per sampler, the same step with the contrastive loss replaced by
a constant; ``ablated_share = 1 - ms(without) / ms(with)`` is then the loss's whole cost, forward and backward.

Each measurement runs in a fresh spawned process: peak memory is ``max_memory_allocated`` on CUDA (everything the
step holds: weights, optimiser state, banks, activations) and, on CPU, the growth of the peak resident set over the
resident set after set-up (model, optimiser, banks and batches built; the peak counter reset there where Linux
allows it), warm-up steps included.

    python benchmarks/bench_step.py                                  # CPU preset, both losses x ns/sg/sag + floor
    python benchmarks/bench_step.py --contrast reference --sampler sg   # one loss, one sampler
    python benchmarks/bench_step.py --preset paper --device cuda     # paper size: 4+4 x 256^2, 512-d, full banks
    python benchmarks/bench_step.py --size 128 --batch 2 --queries 256 --negatives 512 --bank 30000 --dim 512 \\
        --sampler sg --iters 3 --threads 2 --device cpu --json       # any shape; one JSON object per measurement
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, int]] = {
    # CPU-sized: 64x64, batch 2 + 2, D = 64, 64 queries x 128 negatives, bank 512 per class.
    "cpu": {"size": 64, "batch": 2, "dim": 64, "queries": 64, "negatives": 128, "bank": 512, "iters": 5},
    # The paper / acdc setting: 256x256, batch 4 + 4, D = 512, 256 queries x 512 negatives, 30 000 keys per class.
    "paper": {"size": 256, "batch": 4, "dim": 512, "queries": 256, "negatives": 512, "bank": 30000, "iters": 20},
}
SAMPLERS = ("ns", "sg", "sag")
CONTRASTS = ("reference", "batch")
NUM_CLASSES = 4


def _labels(b: int, size: int, generator: Any) -> Any:
    """Phantom-like label maps: three nested discs (classes 1-3) at random centres on background 0."""
    import torch

    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = size * (0.35 + 0.3 * torch.rand(b, 2, generator=generator))
    r = torch.sqrt((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) / size
    return torch.where(r < 0.08, 3, torch.where(r < 0.13, 2, torch.where(r < 0.2, 1, 0))).long()


def _batch(size: int, b: int, seed: int) -> Any:
    import torch

    from arco.methods import Batch

    g = torch.Generator().manual_seed(seed)
    lab, unl = _labels(b, size, g), _labels(b, size, g)

    def image(x: torch.Tensor) -> torch.Tensor:
        return x.float()[:, None] / 3 + 0.1 * torch.randn(x.shape[0], 1, size, size, generator=g)

    return Batch(image(lab), lab, image(unl))


def _status_kib(field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` (current) resident set of this process, KiB (peak from getrusage elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _fill_banks(method: Any) -> None:
    """Full banks: every slot of every bank/queue of the method's loss modules holds a valid random unit key."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device="cpu").manual_seed(1)
    for module in method.components().values():
        for name, buf in module.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("bank", "queue", "keys") and buf.is_floating_point():
                buf.copy_(F.normalize(torch.randn(buf.shape, generator=g), dim=-1).to(buf.device, buf.dtype))
            elif leaf in ("bank_valid",):
                buf.fill_(True)
        banks = getattr(module, "banks", None)
        if banks is not None:  # the reference loss's per-class FIFO banks: full, oldest at slot 0
            banks.count.copy_(banks.capacity)
            banks.ptr.zero_()


class _Floor:
    """The network-only step of stage 2, with the method's own student, teacher and optimiser."""

    def __init__(self, trainer: Any) -> None:
        self.t = trainer
        self.m = trainer.method

    def __call__(self, batch: Any, it: int) -> None:
        import torch
        import torch.nn.functional as F

        t, m = self.t, self.m
        batch = batch.to(t.device)
        bl = batch.image_l.shape[0]
        with t.autocast():
            with torch.no_grad():
                m.teacher(batch.image_u)
                m.teacher(torch.cat([batch.image_l, batch.image_u]))
            out = m.student(torch.cat([batch.image_l, batch.image_u]))
            loss = F.cross_entropy(out.logits[:bl].float(), batch.label_l) + out.logits[bl:].float().square().mean()
        t.optimizers.zero_grad()
        loss.backward()
        t.optimizers.step(t.scaler)
        m.update_teachers(0.99)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (``spec["what"]`` = ``"arco"`` or ``"network"``) in this process; returns the JSON row."""
    import torch

    from arco.engine import EngineConfig, OptimConfig, ScheduleConfig, StageSpec
    from arco.engine.loop import _Trainer
    from arco.methods import ModelConfig
    from arco.methods.arco import ArcoFinetuneConfig, ArcoFinetuneMethod

    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    bank = spec["bank"] if spec["contrast"] == "batch" else None  # None: the reference's 50 000 / 30 000 keys
    cfg = ArcoFinetuneConfig(contrast=spec["contrast"], sampler=spec["sampler"], num_queries=spec["queries"],
                             num_negatives=spec["negatives"], bank_size=bank, confidence=0.0, delta_p=0.0)  # fmt: skip
    torch.manual_seed(0)
    method = ArcoFinetuneMethod(cfg, NUM_CLASSES, 2, ModelConfig(arch="unet", dim=spec["dim"], hidden_dim=spec["dim"]))
    data = argparse.Namespace(spatial_dims=2, val=[], labeled=None, unlabeled=None)
    engine = EngineConfig(device=spec["device"], precision=spec["precision"], progress=False,
                          channels_last=spec["channels_last"], compile=spec["compile"])  # fmt: skip
    stage = StageSpec(
        "bench", ScheduleConfig(iterations=10**6, batch_labeled=spec["batch"], batch_unlabeled=spec["batch"])
    )
    trainer = _Trainer(method, data, stage, OptimConfig(), engine, Path("."), {}, "default")
    trainer.prepare()
    method.set_training(True)
    with torch.no_grad():
        _fill_banks(method)
    step = _Floor(trainer) if spec["what"] == "network" else trainer.step
    batches = [_batch(spec["size"], spec["batch"], seed) for seed in range(4)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Peak memory of the steps (warm-up included) over what the set-up holds: model, optimiser, banks, batches.
    _reset_peak_rss()
    base_kib = _status_kib("VmRSS")
    for it in range(spec["warmup"]):
        step(batches[it % len(batches)], it)
    sync()
    in_loss = [0.0]
    original = ArcoFinetuneMethod.contrast_loss

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        sync()
        t0 = time.perf_counter()
        out = original(self, *args, **kwargs)
        sync()
        in_loss[0] += time.perf_counter() - t0
        return out

    if spec["what"] == "arco-no-contrast":

        def timed(self: Any, views: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: F811 - the ablation
            return views.image.new_zeros((), dtype=torch.float32)

    ArcoFinetuneMethod.contrast_loss = timed
    try:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for it in range(spec["iters"]):
            step(batches[it % len(batches)], spec["warmup"] + it)
        sync()
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        ArcoFinetuneMethod.contrast_loss = original
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = max(_status_kib("VmHWM") - base_kib, 0) / 1024
    return {**spec, "ms": 1000 * total / spec["iters"], "cpu_ms": 1000 * cpu / spec["iters"],
            "peak_mb": round(peak_mb, 1), "contrast_share": in_loss[0] / total, "torch": torch.__version__}  # fmt: skip


def _worker(spec: dict[str, Any], queue: Any) -> None:
    queue.put(measure(spec))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure` in a fresh spawned process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(spec, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help="cpu (default on CPU) or paper (on CUDA)")
    for key in ("size", "batch", "queries", "negatives", "bank", "dim", "iters"):
        ap.add_argument(f"--{key}", type=int, default=None, help=f"override the preset's {key}")
    ap.add_argument("--sampler", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    ap.add_argument("--contrast", nargs="+", default=list(CONTRASTS), choices=CONTRASTS, help="L_contrast (both)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocations, autotuning)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--channels-last", action="store_true", help="engine.channels_last")
    ap.add_argument("--compile", action="store_true", help="engine.compile (the student's forward)")
    ap.add_argument("--no-floor", action="store_true", help="skip the network-only row")
    ap.add_argument("--ablate", action="store_true", help="also time each step without the contrastive loss")
    ap.add_argument("--json", action="store_true", help="print one JSON object per measurement instead of a table")
    return ap


def main() -> None:
    args = _parser().parse_args()
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    preset = args.preset or ("paper" if device.startswith("cuda") else "cpu")
    shape = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in PRESETS[preset].items()}
    common = {**shape, "preset": preset, "device": device, "threads": args.threads, "warmup": args.warmup,
              "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile}  # fmt: skip
    first = {"sampler": args.sampler[0], "contrast": args.contrast[0]}
    specs = [] if args.no_floor else [{**common, "what": "network", **first}]
    for c in args.contrast:
        for s in args.sampler:
            specs += [{**common, "what": "arco", "sampler": s, "contrast": c}]
            specs += [{**common, "what": "arco-no-contrast", "sampler": s, "contrast": c}] if args.ablate else []
    rows = []
    if not args.json:
        print(f"device={device} threads={args.threads} precision={args.precision} torch={torch.__version__} "
              f"preset={preset} {shape}")  # fmt: skip
        print("| step | L_contrast | sampler | ms/step | CPU ms/step | peak MB | contrastive call % "
              "| contrastive fwd+bwd % | x network floor (CPU time) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
    for spec in specs:
        row = run(spec)
        floor = rows[0]["cpu_ms"] if rows and rows[0]["what"] == "network" else None
        row["vs_floor"] = None if floor is None else row["cpu_ms"] / floor
        if row["what"] == "arco-no-contrast":  # the whole cost of the loss, from the step measured just before
            row["ablated_share"] = 1 - row["ms"] / rows[-1]["ms"]
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(_table_row(row), flush=True)


def _table_row(row: dict[str, Any]) -> str:
    what = {"network": "network only", "arco": "ARCO stage 2", "arco-no-contrast": "ARCO without L_contrast"}
    sampler = "-" if row["what"] == "network" else row["sampler"]
    contrast = "-" if row["what"] == "network" else row["contrast"]
    ratio = "-" if row["vs_floor"] is None else f"{row['vs_floor']:.2f}"
    call = f"{100 * row['contrast_share']:.1f}" if row["what"] == "arco" else "-"
    whole = f"{100 * row['ablated_share']:.1f}" if "ablated_share" in row else "-"
    return (
        f"| {what[row['what']]} | {contrast} | {sampler} | {row['ms']:.1f} | {row['cpu_ms']:.1f} "
        f"| {row['peak_mb']:.0f} | {call} | {whole} | {ratio} |"
    )


if __name__ == "__main__":
    main()
