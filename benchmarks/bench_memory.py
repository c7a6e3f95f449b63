"""Peak memory of preprocessing and of training from a preprocessed folder, against loading the data in memory.

Usage::

    python benchmarks/bench_memory.py                       # small: 12 cases of 128x128x(16..32), a minute
    python benchmarks/bench_memory.py --full --work /data/bench   # LiTS size class: 131 CT volumes of 512x512x(75..150)
    python benchmarks/bench_memory.py --cases 20 --size 256 --slices 40 60 --iters 50 --workers 0 2 --json

Steps, each phase in its own process tree (so the figures do not mix):

1. generate (or reuse) a synthetic LiTS-like nnU-Net raw folder ``WORK/raw`` (int16 HU CT volumes: air around an
   elliptic body, a liver and 1-3 tumours, noise; labels 0 bg / 1 liver / 2 tumour; .nii.gz), vectorised;
2. ``arco data preprocess WORK/raw --out WORK/pp --dataset lits`` (median spacing, CT window, body crop), then the
   same command again (an unchanged source: fingerprints only);
3. ``arco train --method supervised`` from ``WORK/pp`` (2D, LiTS preset 256x256, ``--iters`` iterations, batch
   ``--batch``): the loop alone once per ``--workers`` value, and once with validation on the val cases at the end
   (``--val``);
4. the baseline measured in the same run: the in-memory ``lits`` loader (`arco.data.build_data`) on the raw
   folder. When the whole dataset would not fit comfortably in RAM it loads two subsets and extrapolates
   linearly to all cases (labelled "extrapolated").

Memory figures: ``peak RSS`` = the largest single process (``getrusage`` via ``os.wait4``, exact), and ``peak sum``
= the sum of RSS (and of PSS, which counts shared pages once) over the process tree, sampled from /proc at 5 Hz
(Linux; the DataLoader workers are children of the training process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["generate", "measure", "main"]

SPACING = (1.0, 0.77, 0.77)  # (Z, Y, X) mm: LiTS' median spacing (nnU-Net Task003 fingerprint, rounded)


# ------------------------------------------------------------------------------------------------ synthetic data


def synth_case(rng: np.random.Generator, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like case ``(Z, Y, X)``: int16 HU image and uint8 label, built with broadcasting only."""
    z = (np.arange(depth, dtype=np.float32) / max(depth - 1, 1))[:, None, None]
    y = (np.arange(size, dtype=np.float32) / (size / 2) - 1)[None, :, None]
    x = (np.arange(size, dtype=np.float32) / (size / 2) - 1)[None, None, :]
    phase = rng.uniform(0, 2 * np.pi)
    rx, ry = 0.78 + 0.06 * np.sin(2 * np.pi * z + phase), 0.58 + 0.05 * np.cos(2 * np.pi * z + phase)
    body = (x / rx) ** 2 + (y / ry) ** 2 <= 1
    c = rng.uniform([0.4, -0.2, -0.4], [0.6, 0.0, -0.2])
    r = rng.uniform([0.25, 0.22, 0.25], [0.4, 0.3, 0.35])
    liver = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
    label = liver.astype(np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        t = c + rng.uniform(-0.5, 0.5, 3) * r
        rt = rng.uniform(0.03, 0.08)
        label[(((z - t[0]) * 0.5) ** 2 + (y - t[1]) ** 2 + (x - t[2]) ** 2 <= rt**2) & liver] = 2
    hu = np.where(body, np.float32(40), np.float32(-1000))
    hu[label == 1], hu[label == 2] = 100, 160
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * 12
    return hu.astype(np.int16), label


def generate(root: Path, cases: int, size: int, slices: tuple[int, int], seed: int = 0) -> dict:
    """Write (or reuse, when ``root/bench.json`` matches) a LiTS-like nnU-Net raw folder; return its description."""
    import nibabel as nib

    spec = {"cases": cases, "size": size, "slices": list(slices), "seed": seed, "spacing": list(SPACING)}
    marker = root / "bench.json"
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        return json.loads(marker.read_text())
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    depths = rng.integers(slices[0], slices[1] + 1, cases)
    affine = np.diag([*SPACING[::-1], 1.0])
    for i, depth in enumerate(depths):
        image, label = synth_case(rng, size, int(depth))
        for folder, name, arr in (("imagesTr", f"liver_{i:03d}_0000", image), ("labelsTr", f"liver_{i:03d}", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            img = nib.Nifti1Image(np.ascontiguousarray(arr.T), affine)
            img.header.set_zooms(SPACING[::-1])
            nib.save(img, str(root / folder / f"{name}.nii.gz"))
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    voxels = int(depths.sum()) * size * size
    info = {"spec": spec, "voxels": voxels, "seconds": round(time.perf_counter() - t0, 1), "bytes": _du(root)}
    marker.write_text(json.dumps(info))
    return info


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------ measuring


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` (niced); return wall time, exit code and peak memory (MiB) of its process tree."""
    peak = {"rss_sum": 0, "pss_sum": 0, "procs": 0}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: os.nice(19))
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                pids = _tree(proc.pid)
                rss = sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
                pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
                peak.update(rss_sum=max(peak["rss_sum"], rss), pss_sum=max(peak["pss_sum"], pss))
                peak["procs"] = max(peak["procs"], len(pids))
                done.wait(0.2)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        thread.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # largest process of the tree that was waited for
        "peak_sum_rss_mb": round(peak["rss_sum"] / 1024, 1),
        "peak_sum_pss_mb": round(peak["pss_sum"] / 1024, 1),
        "processes": peak["procs"],
        "log": str(log),
    }


def _mem_available_mb() -> float:
    return _kb("/proc/meminfo", "MemAvailable:") / 1024


# ------------------------------------------------------------------------------------------------ phases


def _subset(raw: Path, dst: Path, k: int) -> Path:
    """An nnU-Net folder with the first ``k`` cases of ``raw`` (symlinks)."""
    if dst.exists():
        shutil.rmtree(dst)
    for folder in ("imagesTr", "labelsTr"):
        (dst / folder).mkdir(parents=True)
        for f in sorted((raw / folder).glob("*.nii.gz"))[:k]:
            (dst / folder / f.name).symlink_to(f.resolve())
    meta = json.loads((raw / "dataset.json").read_text())
    (dst / "dataset.json").write_text(json.dumps({**meta, "numTraining": k}))
    return dst


def baseline(args: argparse.Namespace, raw: Path, work: Path, info: dict) -> list[dict]:
    """Peak memory of the in-memory `lits` loader: all cases when they fit, else 2 subsets + a linear fit."""
    code = (
        "import sys; from arco.data import DataConfig, build_data; "
        "d = build_data(DataConfig(dataset='lits', root=sys.argv[1], spatial_dims=2, labeled='all')); "
        "print(len(d.labeled), 'slices')"
    )
    # in memory per voxel: float32 image + int64 label (volumes) + uint8 label slices = 13 bytes
    need_mb = info["voxels"] * 13 / 2**20
    if args.baseline == "all" or (args.baseline == "auto" and need_mb < 0.3 * _mem_available_mb()):
        m = measure([sys.executable, "-c", code, str(raw)], work / "baseline_all.log")
        return [{"phase": f"in-memory lits loader, all {args.cases} cases", "kind": "measured", **m}]
    import nibabel as nib

    rows, points = [], []
    for k in (args.subset, 2 * args.subset):
        sub = _subset(raw, work / f"subset{k}", k)
        m = measure([sys.executable, "-c", code, str(sub)], work / f"baseline_{k}.log")
        rows.append({"phase": f"in-memory lits loader, first {k} cases", "kind": "measured", **m})
        voxels = sum(int(np.prod(nib.load(str(f)).shape)) for f in (sub / "imagesTr").iterdir())
        points.append((voxels, m["peak_rss_mb"]))
    # linear in the number of voxels (cases differ in depth, so a per-case slope would depend on which come first)
    (v1, m1), (v2, m2) = points
    slope = (m2 - m1) / (v2 - v1)
    est = m2 + slope * (info["voxels"] - v2)
    rows.append(
        {
            "phase": f"in-memory lits loader, all {args.cases} cases",
            "kind": f"extrapolated ({slope * 2**20:.1f} B/voxel)",
            "peak_rss_mb": round(est, 1),
        }
    )
    return rows


def _train(args: argparse.Namespace, pp: Path, work: Path, workers: int, val: bool, env: dict) -> dict:
    """One `arco train --method supervised` from the preprocessed folder; ``val``: validate the val cases at the end
    (otherwise data.val_fraction=0: the training loop alone)."""
    sets = {
        "data.dataset": "preprocessed",
        "data.root": str(pp),
        "data.labeled": "all",
        "data.val_fraction": 0.1 if val else 0.0,
        "schedule.iterations": args.iters,
        "schedule.batch_labeled": args.batch,
        "engine.num_workers": workers,
        "engine.device": "cpu",
        "engine.threads": args.threads,
        "engine.val_every": 0,
        "engine.progress": "false",
        "engine.log_every": max(args.iters // 4, 1),
    }
    name = f"run_w{workers}{'_val' if val else ''}"
    cmd = [sys.executable, "-m", "arco", "train", "--config", "nnunet", "--method", "supervised"]
    cmd += ["--out", str(work / name), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    m = measure(cmd, work / f"{name}.log", env)
    what = f"train from preprocessed, {workers} worker(s), {args.iters} it" + (" + validation" if val else "")
    return {"phase": what, "kind": "measured", **m}


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    raw, pp = work / "raw", work / "pp"
    info = generate(raw, args.cases, args.size, tuple(args.slices), args.seed)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    arco = [sys.executable, "-m", "arco"]
    prep = [*arco, "data", "preprocess", str(raw), "--out", str(pp), "--dataset", "lits", "--dtype", args.dtype]
    prep += ["--jobs", str(args.jobs)]
    rows = []
    if not (args.reuse and (pp / "preprocessed.json").is_file()):
        m = measure([*prep, "--overwrite"], work / "preprocess.log", env)
        rows.append({"phase": f"preprocess ({args.jobs} job(s))", "kind": "measured", **m})
    m = measure(prep, work / "preprocess_again.log", env)
    rows.append({"phase": "preprocess again (source unchanged)", "kind": "measured", **m})
    runs = [(w, False) for w in args.workers] if args.val in ("none", "both") else []
    runs += [(args.workers[0], True)] if args.val in ("end", "both") else []
    for w, val in runs:
        rows.append(_train(args, pp, work, w, val, env))
    rows += baseline(args, raw, work, info)
    index = json.loads((pp / "preprocessed.json").read_text())
    crop_voxels = sum(int(np.prod(e["shape"])) for e in index["cases"].values())
    data = {
        "cases": args.cases,
        "size": args.size,
        "slices": list(args.slices),
        "voxels": info["voxels"],
        "raw_gb_on_disk": round(info["bytes"] / 1e9, 2),
        "preprocessed_gb_on_disk": round(_du(pp) / 1e9, 2),
        "preprocessed_voxels": crop_voxels,
        "float32_in_memory_gb": round(info["voxels"] * 4 / 1e9, 2),
        "generate_seconds": info["seconds"],
        "mem_total_gb": round(_kb("/proc/meminfo", "MemTotal:") / 2**20, 1),
    }
    if not args.keep:
        for path in (pp, *work.glob("run_w*"), *work.glob("subset*")):
            shutil.rmtree(path, ignore_errors=True)
    return {"data": data, "rows": rows}


def _table(result: dict) -> str:
    d = result["data"]
    head = (
        f"data: {d['cases']} cases of {d['size']}x{d['size']}x({d['slices'][0]}..{d['slices'][1]}) = "
        f"{d['voxels'] / 1e9:.2f} G voxels ({d['float32_in_memory_gb']} GB as float32); raw .nii.gz "
        f"{d['raw_gb_on_disk']} GB, preprocessed {d['preprocessed_gb_on_disk']} GB; RAM {d['mem_total_gb']} GiB"
    )
    lines = [
        head,
        "",
        "| phase | kind | peak RSS MiB (largest process) | peak sum RSS / PSS MiB (tree) | s | rc |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        tree = f"{r['peak_sum_rss_mb']} / {r['peak_sum_pss_mb']} ({r['processes']} proc)" if "processes" in r else ""
        lines.append(
            f"| {r['phase']} | {r['kind']} | {r['peak_rss_mb']} | {tree} | {r.get('seconds', '')} | {r.get('rc', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/bench_memory", help="working folder (the raw data is reused)")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--size", type=int, default=128, help="in-plane size (pixels)")
    p.add_argument("--slices", type=int, nargs=2, default=(16, 32), metavar=("MIN", "MAX"), help="slices per case")
    p.add_argument("--full", action="store_true", help="LiTS size class: 131 cases of 512x512x(75..150)")
    p.add_argument("--iters", type=int, default=40, help="training iterations per run")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=(0, 2), help="DataLoader workers, one run each")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    p.add_argument("--jobs", type=int, default=1, help="preprocessing processes")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    p.add_argument(
        "--baseline",
        default="auto",
        choices=("auto", "all", "subsets"),
        help="in-memory baseline on all cases, or on 2 subsets extrapolated by voxels (auto: all when it takes "
        "< 30 %% of the available memory)",
    )
    p.add_argument("--subset", type=int, default=4, help="baseline subset size when extrapolating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--val",
        default="both",
        choices=("none", "end", "both"),
        help="train without validation (the loop alone, one run per --workers), with validation on the val cases "
        "at the end (one run, first --workers value), or both (default)",
    )
    p.add_argument("--reuse", action="store_true", help="reuse WORK/pp when present (skip the first preprocess)")
    p.add_argument("--keep", action="store_true", help="keep the preprocessed folder and the runs")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = p.parse_args()
    if args.full:
        args.cases, args.size, args.slices = 131, 512, (75, 150)
    result = run(args)
    print(json.dumps(result) if args.json else _table(result))
    if any(r.get("rc", 0) for r in result["rows"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
