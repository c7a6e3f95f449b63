"""Monte-Carlo study of the NS, SG and SAG estimators of a masked mean (paper Sec. 3.3, Thm 3.2, Lemma 3.1).

For a per-pixel value map h over candidates P (|P| = N), the estimator is ``H_hat = (1/n) sum_{p in S} h(p)``.
Theory printed next to the measurements:

- with replacement (Thm 3.2): ``Var_NS - Var_SG = (1/n) sum_m w_m (mu_m - mu)^2``, ``w_m = N_m / N``;
- without replacement (what :func:`arco.sampling.sample` does), exactly: ``Var_NS = (1 - n/N) S^2 / n``
  (simple random sampling, S^2 the population variance with N-1), and for SG with randomised systematic
  rounding ``Var_SG = E_v[sum_m n_m (1 - n_m/N_m) S_m^2] / n^2 + Var_v[sum_m n_m mu_m / n]``, averaged
  over the rounding offset v (exact; on 200000 evenly spaced offsets when N is larger).

No printing here: the ``arco variance`` verb formats and prints :func:`format_table`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from arco._checks import DataError
from arco._io import atomic_path
from arco.sampling import group_ids, sample_many

__all__ = ["synthetic_image", "load_study_input", "theory", "run_study", "format_table", "write_outputs"]

COLUMNS = (
    "grid", "num", "candidates", "trials", "true_mean", "mean_ns", "mean_sg", "mean_sag", "bias_ns",
    "bias_sg", "bias_sag", "var_ns", "var_sg", "var_sag", "ratio_sg_ns", "ratio_sag_ns", "gap_measured",
    "gap_se",    "gap_pred_wr", "gap_pred_wor", "var_ns_pred_wor", "var_sg_pred_wor",
)  # fmt: skip
_MAX_OFFSETS = 200_000
_CHUNK_ENTRIES = 2_000_000  # trials x candidates per sampler call: ~50 MB of temporaries


def synthetic_image(size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small axial-slice-like phantom: ``(image float32 (H, W), body mask bool (H, W))``.

    Body ellipse with fat rim, two dark lungs, a bright heart, a very bright spine, a smooth bias gradient and
    mild noise: the mean intensity varies strongly between regions, which is what stratification exploits.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1  # [-1, 1]

    def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1

    body = ellipse(0.05, 0, 0.75, 0.92)
    image = np.where(body, 0.55, 0.0)
    image = np.where(body & ~ellipse(0.05, 0, 0.67, 0.84), 0.85, image)  # subcutaneous fat
    image = np.where(ellipse(-0.05, -0.42, 0.42, 0.27) | ellipse(-0.05, 0.42, 0.42, 0.27), 0.08, image)  # lungs
    image = np.where(ellipse(0.05, 0.08, 0.25, 0.22), 0.75, image)  # heart
    image = np.where(ellipse(0.55, 0, 0.12, 0.12), 1.0, image)  # spine
    image = image + body * (0.15 * x + 0.1 * y)  # bias field
    image = image + body * rng.normal(0, 0.03, size=(size, size))
    return image.astype(np.float32), body


def _read_array(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist; pass an existing .nii/.nii.gz, .npy or .png file")
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            arr = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float64))
            arr = arr.transpose(tuple(reversed(range(arr.ndim))))  # (X, Y, Z) -> (Z, Y, X), as arco.data.io
        elif name.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        elif name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("F") if im.mode not in ("I", "I;16", "F") else im, dtype=np.float64)
        else:
            raise DataError(f"{what} file {path}: unknown extension; use .nii/.nii.gz, .npy or .png")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one actionable message
        reason = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{what} file {path} could not be read ({reason}); is it a valid image file?") from exc
    arr = np.squeeze(np.asarray(arr))
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what} file {path}: expected a 2D or 3D numeric array, got shape {arr.shape} {arr.dtype}")
    return arr


def load_study_input(
    image: str | os.PathLike | None, label: str | os.PathLike | None = None, klass: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Values, mask and a description for the study.

    Args:
        image: 2D/3D image file (value = intensity), or None for :func:`synthetic_image` (mask = body).
        label: optional label file of the image's shape; with ``klass`` the mask is ``label == klass``.
        klass: class index (required with ``label``).

    Returns:
        ``values`` float64 ``(1, *S)``, ``mask`` bool ``(1, *S)`` and a one-line description.

    Raises:
        DataError: missing/unreadable file, wrong dimensionality, non-finite values, label shape mismatch,
            class absent or missing.
    """
    if image is None:
        arr, body = synthetic_image()
        if label is not None:
            raise DataError("--label needs --image: the built-in example has its own mask")
        return (
            torch.from_numpy(arr.astype(np.float64))[None],
            torch.from_numpy(body)[None],
            "built-in phantom",
        )
    path = Path(image)
    arr = _read_array(path, "image").astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"image file {path} contains {int((~np.isfinite(arr)).sum())} NaN/inf values; clean it first")
    mask = np.ones(arr.shape, dtype=bool)
    desc = f"{path.name} {'x'.join(map(str, arr.shape))}"
    if label is not None:
        lab = _read_array(Path(label), "label")
        if lab.shape != arr.shape:
            raise DataError(
                f"label file {label} has shape {lab.shape} but image {path} has {arr.shape}; "
                "use a label of the image's shape"
            )
        if klass is None:
            raise DataError("--label needs --class K: the class whose pixels form the mask")
        present = sorted(int(v) for v in np.unique(lab))
        if klass not in present:
            raise DataError(f"class {klass} is absent from label file {label}; present classes: {present}")
        mask = lab == klass
        desc += f", class {klass} of {Path(label).name}"
    elif klass is not None:
        raise DataError("--class needs --label FILE")
    return torch.from_numpy(arr)[None], torch.from_numpy(mask)[None], desc


def theory(values: torch.Tensor, mask: torch.Tensor, num: int, grid: int | Sequence[int]) -> dict[str, float]:
    """Predicted variances of the NS and SG estimators of the mean of ``values`` over ``mask``.

    Returns:
        ``gap_pred_wr`` (Thm 3.2, with replacement), ``var_ns_pred_wor`` and ``var_sg_pred_wor`` (exact,
        without replacement, SG with randomised systematic rounding) and ``gap_pred_wor`` (their difference).
    """
    gid = group_ids(mask.shape, grid)[mask]
    h = values[mask].double()
    n_all = h.numel()
    n = min(num, n_all)
    counts = torch.bincount(gid).double()
    mu_all = torch.bincount(gid, weights=h) / counts.clamp(min=1)
    ss_all = torch.bincount(gid, weights=(h - mu_all[gid]) ** 2)
    nonempty = counts > 0
    counts_ne, mu_m = counts[nonempty], mu_all[nonempty]
    s2_m = ss_all[nonempty] / (counts_ne - 1).clamp(min=1)
    mu = h.mean()
    w = counts_ne / n_all
    s2 = ((h - mu) ** 2).sum() / max(n_all - 1, 1)
    out = {"gap_pred_wr": float((w * (mu_m - mu) ** 2).sum() / n)}
    out["var_ns_pred_wor"] = float((1 - n / n_all) * s2 / n)
    # Exact SG variance: condition on the rounding offset v (the only source of randomness in the allocation).
    counts_l = counts_ne.long()
    cum = torch.cumsum(counts_l, 0)
    v = torch.arange(n_all) if n_all <= _MAX_OFFSETS else torch.linspace(0, n_all - 1, _MAX_OFFSETS).long()
    within, mean_v = torch.zeros(()), []
    for chunk in v.split(20_000):  # chunks of offsets bound the (offsets x groups) table
        hi = (cum[None] * n + chunk[:, None]) // n_all
        n_m = (hi - torch.cat([torch.zeros_like(hi[:, :1]), hi[:, :-1]], 1)).double()
        within = within + (n_m * (1 - n_m / counts_ne) * s2_m).sum(1).sum() / n**2
        mean_v.append((n_m * mu_m).sum(1) / n)
    mv = torch.cat(mean_v)
    out["var_sg_pred_wor"] = float(within / len(v) + mv.var(unbiased=False))
    out["gap_pred_wor"] = out["var_ns_pred_wor"] - out["var_sg_pred_wor"]
    return out


def _estimates(values_flat, mask, num, strategy, grid, trials, gen, progress) -> torch.Tensor:
    """``trials`` estimates, drawn in vectorised chunks (one sampler call per chunk)."""
    cells = math.prod((grid,) * (mask.dim() - 1) if isinstance(grid, int) else grid)
    chunk = max(1, min(trials, _CHUNK_ENTRIES // max(int(mask.sum()), 1), ((1 << 23) - 1) // cells))
    out = []
    for start in range(0, trials, chunk):
        t = min(chunk, trials - start)
        idx = sample_many(mask, num, strategy, t, grid, gen)
        out.append(values_flat[idx].mean(1))
        if progress is not None:
            progress(t)
    return torch.cat(out)


def run_study(
    values: torch.Tensor,
    mask: torch.Tensor,
    nums: Sequence[int],
    grids: Sequence[int],
    trials: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Measure mean, bias and variance of NS, SG and SAG for every (grid, num): one row each (``COLUMNS``).

    NS does not depend on the grid: its ``trials`` estimates per ``num`` are shared by the rows of all grids.
    ``progress(k)`` is called after every k trials drawn: ``trials * len(nums) * (1 + 2 * len(grids))`` total.
    """
    if mask.sum() == 0:
        raise DataError("the mask is empty: nothing to estimate; choose another class or image")
    if trials < 2:
        raise ValueError(f"expected argument `trials` to be at least 2, but got {trials}")
    gen = torch.Generator().manual_seed(seed)
    values_flat = values.reshape(-1).double()
    true_mean = float(values.double()[mask].mean())
    rows = []
    for num in nums:
        ns = _estimates(values_flat, mask, num, "ns", 1, trials, gen, progress)
        for grid in grids:
            est = {"ns": ns}
            for s in ("sg", "sag"):
                est[s] = _estimates(values_flat, mask, num, s, grid, trials, gen, progress)
            var = {s: float(e.var()) for s, e in est.items()}
            # Standard error of a sample variance ~ var * sqrt(2 / (T - 1)) for near-normal estimates.
            se = math.sqrt(2 / (trials - 1)) * math.hypot(var["ns"], var["sg"])
            row = {
                "grid": grid,
                "num": num,
                "candidates": int(mask.sum()),
                "trials": trials,
                "true_mean": true_mean,
            }
            row |= {f"mean_{s}": float(e.mean()) for s, e in est.items()}
            row |= {f"bias_{s}": float(e.mean()) - true_mean for s, e in est.items()}
            row |= {f"var_{s}": v for s, v in var.items()}
            row |= {
                "ratio_sg_ns": var["sg"] / var["ns"] if var["ns"] > 0 else float("nan"),
                "ratio_sag_ns": var["sag"] / var["ns"] if var["ns"] > 0 else float("nan"),
                "gap_measured": var["ns"] - var["sg"],
                "gap_se": se,
            }
            row |= theory(values, mask, num, grid)
            rows.append({k: row[k] for k in COLUMNS})
    return rows


def format_table(rows: Sequence[dict[str, float]]) -> str:
    """Plain-text table of the main columns (all columns go to the CSV)."""
    head = (
        f"{'grid':>4} {'n':>5} {'true mean':>10} {'mean NS':>9} {'mean SG':>9} {'mean SAG':>9} "
        f"{'bias SG':>9} {'bias SAG':>9} "
        f"{'Var NS':>9} {'Var SG':>9} {'Var SAG':>9} {'SG/NS':>6} {'SAG/NS':>6} {'gap meas.':>10} "
        f"{'± se':>8} {'pred wr':>9} {'pred wor':>9}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['grid']:>4} {r['num']:>5} {r['true_mean']:10.5f} {r['mean_ns']:9.5f} {r['mean_sg']:9.5f} "
            f"{r['mean_sag']:9.5f} {r['bias_sg']:+9.1e} {r['bias_sag']:+9.1e} {r['var_ns']:9.2e} "
            f"{r['var_sg']:9.2e} "
            f"{r['var_sag']:9.2e} "
            f"{r['ratio_sg_ns']:6.3f} {r['ratio_sag_ns']:6.3f} {r['gap_measured']:10.2e} {r['gap_se']:8.1e} "
            f"{r['gap_pred_wr']:9.2e} {r['gap_pred_wor']:9.2e}"
        )
    lines.append(
        "gap = Var_NS - Var_SG. 'pred wr': Thm 3.2, (1/n) sum_m w_m (mu_m - mu)^2 (with replacement); "
        "'pred wor': exact without-replacement prediction (finite-population factors, randomised rounding). "
        "SAG replaces mirrors that leave the mask (docs/samplers.md): biased where a cell's region is asymmetric."
    )
    return "\n".join(lines)


def write_outputs(rows: Sequence[dict[str, float]], out_dir: str | os.PathLike, title: str = "") -> tuple[Path, Path]:
    """Write ``variance.csv`` and ``variance.png`` (variance vs n, log-log, a line per strategy and grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    csv_path, png_path = out / "variance.csv", out / "variance.png"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buf.getvalue())
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    grids = sorted({r["grid"] for r in rows})
    first = [r for r in rows if r["grid"] == grids[0]]
    ax.plot([r["num"] for r in first], [r["var_ns"] for r in first], "o-", color="k", label="NS")
    ax.plot([r["num"] for r in first], [r["var_ns_pred_wor"] for r in first], ":", color="k", label="NS theory")
    for i, g in enumerate(grids):
        sel = [r for r in rows if r["grid"] == g]
        nn = [r["num"] for r in sel]
        ax.plot(nn, [r["var_sg"] for r in sel], "s-", color=f"C{i}", label=f"SG grid {g}")
        ax.plot(nn, [r["var_sag"] for r in sel], "^--", color=f"C{i}", alpha=0.7, label=f"SAG grid {g}")
        ax.plot(nn, [r["var_sg_pred_wor"] for r in sel], ":", color=f"C{i}", alpha=0.6)
    ax.set(xscale="log", yscale="log", xlabel="sample size n", ylabel="Var of the mean estimate")
    ax.set_title(f"Monte-Carlo variance{': ' + title if title else ''}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return csv_path, png_path
