"""Built-in synthetic datasets, generated deterministically from a seed with vectorised NumPy.

- ``phantom2d``: short-axis cardiac-MRI-like stacks (background, RV, myocardium, LV), written in the ACDC
SSL4MIS
  layout. Default 40 subjects of 8-10 slices of 128x128 (base to apex; the LV shrinks toward the apex and
  apical
  slices may have no RV). The task is made non-trivial on purpose: RV and LV blood pools are both bright, the
  myocardium has the intensity of the chest wall, liver and other soft tissue, bright distractors (aorta, fat,
  stomach) surround the heart, papillary muscles darken the LV cavity, and every slice has a bias field,
  partial-volume blur and Rician noise.
- ``phantom3d``: LA-like volumes (one foreground class: an irregular chamber with four thin pulmonary-vein
tubes and
  an appendage) next to unlabeled bright structures (LV, aorta), written in the LA UA-MT layout (``<case>/
  mri_norm2.h5`` with the image z-scored, arrays stored (X, Y, Z) as in UA-MT). Default 48x64x64 (D, H, W).

Each subject uses its own generator ``default_rng([seed, index])``, so subject k is the same whatever the
count.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from arco._checks import ConfigError, DataError, path_problem
from arco.data.io import write_h5
from arco.data.outdir import fresh_dir as _fresh_dir
from arco.data.outdir import publish_dir as _publish

__all__ = [
    "phantom2d_subject",
    "phantom3d_subject",
    "generate_phantom2d",
    "generate_phantom3d",
    "ensure_phantom",
    "PHANTOMS",
    "require_phantom",
]

logger = logging.getLogger(__name__)

PHANTOM2D_CLASSES = ("background", "RV", "Myo", "LV")
PHANTOM3D_CLASSES = ("background", "LA")


def _blob(yy, xx, cy, cx, ry, rx, rot=0.0, amp=None, phase=None):
    """Inside mask of an ellipse with a low-frequency radial perturbation (``amp[k]`` for harmonics 2, 3,
    ...)."""
    cy, cx, ry, rx = (np.asarray(a, np.float32) for a in (cy, cx, ry, rx))
    dy, dx = yy - cy, xx - cx
    c, s = np.float32(np.cos(rot)), np.float32(np.sin(rot))
    u, v = (c * dx + s * dy) / rx, (-s * dx + c * dy) / ry
    rho = np.sqrt(u * u + v * v)
    edge = 1.0
    if amp is not None:
        theta = np.arctan2(v, u)
        for k, (a, p) in enumerate(zip(amp, phase)):
            edge = edge + np.float32(a) * np.cos((k + 2) * theta + np.float32(p))
    return rho < edge


def _smooth_field(rng, shape, amplitude):
    """Multiplicative bias field ``exp(a * p)`` with ``p`` a random polynomial of degree <= 2, ``|p| <=
    1``."""
    axes = np.ogrid[tuple(slice(-1.0, 1.0, complex(0, n)) for n in shape)]
    field = np.zeros(shape, np.float32)
    for i, a in enumerate(axes):
        field = field + rng.normal() * a + rng.normal() * (a * a - 0.5) * 0.5
        for b in axes[i + 1 :]:
            field = field + rng.normal() * a * b * 0.5
    field /= np.abs(field).max() + 1e-6
    return np.exp(amplitude * field)


def _rician(rng, x, sigma):
    return np.sqrt((x + sigma * rng.standard_normal(x.shape)) ** 2 + (sigma * rng.standard_normal(x.shape)) ** 2)


def _heart(rng: np.random.Generator, f: float, t: np.ndarray, n: int, size: int, yy: np.ndarray, xx: np.ndarray):
    """The phantom2d heart's masks (LV cavity, epicardium, septum fat line, RV, RV outline, RV wall, papillary
    muscles) and its centre ``(cy, cx)`` per slice; draws from ``rng`` in a fixed order."""
    u = rng.uniform
    # pixels at 128x128, scaled by f
    cy = size / 2 + f * u(-14, 14) + f * rng.normal(0, 0.7, (n, 1, 1))
    cx = size / 2 + f * u(-12, 16) + f * rng.normal(0, 0.7, (n, 1, 1))
    r_lv = f * u(7.5, 15) * np.sqrt(1 - u(0.55, 0.8) * t) + 0.8 * f
    ecc = u(0.85, 1.15)
    thick = f * u(3.0, 5.0) * (1 + 0.2 * t)
    rot = u(0, np.pi)
    amp, phase = rng.uniform(0, 0.06, 3), rng.uniform(0, 2 * np.pi, 3)
    lv = _blob(yy, xx, cy, cx, r_lv * ecc, r_lv / ecc, rot, amp, phase)
    epi = _blob(yy, xx, cy, cx, r_lv * ecc + thick, r_lv / ecc + thick, rot, amp * 0.7, phase)
    sep = _blob(yy, xx, cy, cx, r_lv * ecc + thick + f, r_lv / ecc + thick + f, rot, amp * 0.7, phase)
    rv_angle = u(2.6, 3.7)  # RV on the image left of the LV
    rv_off = (r_lv + thick) * u(0.7, 1.0)
    rv_cy, rv_cx = cy + rv_off * np.sin(rv_angle), cx + rv_off * np.cos(rv_angle)
    rv_size = (r_lv + thick) * u(1.05, 1.35)
    rv_end = u(0.65, 0.95)  # apical slices past this have no RV
    rv_r = np.maximum(rv_size * np.clip((rv_end - t) / 0.25, 0, 1) ** 0.5, 1e-3)
    rv_outer = _blob(yy, xx, rv_cy, rv_cx, rv_r * u(0.8, 1.0), rv_r * u(0.55, 0.75), rv_angle, amp, phase[::-1])
    rv = rv_outer & ~sep & (rv_r > 0.5)
    rv_wall = _blob(yy, xx, rv_cy, rv_cx, rv_r * 0.9 + 1.5 * f, rv_r * 0.65 + 1.5 * f, rv_angle) & ~rv & ~epi
    # papillary muscles inside the LV cavity (labelled LV, myocardium-dark)
    pap = np.zeros_like(lv)
    for a in rng.uniform(0, 2 * np.pi, 2):
        pr = r_lv * 0.65
        pap |= _blob(yy, xx, cy + pr * np.sin(a), cx + pr * np.cos(a), f * u(1.2, 2.2), f * u(1.2, 2.2))
    return lv, epi, sep, rv, rv_outer, rv_wall, pap, cy, cx


def phantom2d_subject(seed: int, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One phantom2d subject: ``(image (S, size, size) float32 in [0, 1], label (S, size, size) uint8)``."""
    rng = np.random.default_rng([seed, index, 2])
    n = int(rng.integers(8, 11))
    u = rng.uniform
    f = size / 128.0 * u(0.8, 1.2)  # field-of-view / body-size variation between subjects
    t = np.linspace(0.0, 1.0, n)[:, None, None]  # 0 = base, 1 = apex
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2
    tilt = u(-0.6, 0.6)  # the whole chest is rotated per subject (patient / plane orientation)
    yy, xx = (
        np.cos(tilt) * yy + np.sin(tilt) * xx + size / 2,
        -np.sin(tilt) * yy + np.cos(tilt) * xx + size / 2,
    )
    lv, epi, sep, rv, rv_outer, rv_wall, pap, cy, cx = _heart(rng, f, t, n, size, yy, xx)
    label = np.zeros((n, size, size), np.uint8)
    label[rv] = 1
    label[epi & ~lv] = 2
    label[lv] = 3
    # tissues: body, chest wall + fat, lungs, liver, aorta, stomach, spine
    body_cy, body_cx = size / 2 + f * u(-3, 3), size / 2 + f * u(-3, 3)
    body_ry, body_rx = f * u(52, 58), f * u(58, 62)
    body = _blob(yy, xx, body_cy, body_cx, body_ry, body_rx)
    inner = _blob(yy, xx, body_cy, body_cx, body_ry - f * u(6, 9), body_rx - f * u(6, 9))
    fat = body & ~_blob(yy, xx, body_cy, body_cx, body_ry - 2.5 * f, body_rx - 2.5 * f)
    lung_l = _blob(yy, xx, cy - f * u(2, 8), cx - f * u(28, 34), f * u(18, 24), f * u(10, 14), u(-0.3, 0.3))
    lung_r = _blob(yy, xx, cy - f * u(0, 6), cx + f * u(26, 32), f * u(18, 24), f * u(10, 14), u(-0.3, 0.3))
    liver = _blob(yy, xx, cy + f * u(20, 30) + f * 25 * (1 - t), cx - f * u(10, 25), f * u(22, 30), f * u(28, 36))
    aorta = _blob(yy, xx, cy - f * u(20, 26), cx + f * u(4, 14), f * u(4, 6), f * u(4, 6)) & (t < 0.5)
    stomach = _blob(yy, xx, cy + f * u(18, 26), cx + f * u(18, 30), f * u(6, 10), f * u(8, 12)) & (t > 0.4)
    spine = _blob(yy, xx, body_cy + body_ry - f * u(14, 18), body_cx, f * u(6, 8), f * u(6, 8))
    shape = (n, size, size)
    body, inner, fat, lung_l, lung_r, liver, spine, rv_wall = (
        np.broadcast_to(m, shape) for m in (body, inner, fat, lung_l, lung_r, liver, spine, rv_wall)
    )
    blood = u(0.6, 0.95)
    myo = u(0.22, 0.38)
    img = np.zeros(shape, np.float32)
    img[body] = myo * u(0.9, 1.25)  # soft tissue ~ myocardium
    img[body & ~inner] = myo * u(0.9, 1.3)  # chest wall muscle
    img[fat] = u(0.75, 1.0)
    img[(lung_l | lung_r) & inner] = u(0.03, 0.08)
    img[liver & inner] = myo * u(1.0, 1.3)
    img[spine & inner] = u(0.45, 0.6)
    img[aorta & inner] = blood * u(0.9, 1.05)
    img[stomach & inner] = blood * u(0.8, 1.0)
    arc = np.cos(np.arctan2(yy - cy, xx - cx) - u(0, 2 * np.pi)) > u(-0.2, 0.6)
    img[sep & ~epi & arc] = u(0.6, 0.9)  # epicardial fat on part of the circumference
    img[rv_wall & inner] = myo
    img[epi] = myo
    img[rv] = blood * u(0.85, 1.05)
    img[lv] = blood
    img[pap & lv] = myo * u(1.0, 1.4)
    for _ in range(int(rng.integers(1, 4))):  # unlabeled bright vessels / fluid next to the heart
        a, dist = u(0, 2 * np.pi), f * u(20, 32)
        ves = _blob(yy, xx, cy + dist * np.sin(a), cx + dist * np.cos(a), f * u(2.5, 6), f * u(2.5, 6))
        img[ves & inner & ~sep & ~rv_outer] = blood * u(0.8, 1.05)
    img = gaussian_filter(img, (0, u(0.6, 1.0), u(0.6, 1.0)))  # partial volume
    img *= _smooth_field(rng, (n, size, size), u(0.15, 0.45))
    img = _rician(rng, img, u(0.03, 0.08))
    img = (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32), label


def phantom3d_subject(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One phantom3d subject in (D, H, W): ``(image float32 z-scored, label uint8 0/1)``, D = 3/4 of
    ``size``."""
    rng = np.random.default_rng([seed, index, 3])
    u = rng.uniform
    shape = (int(round(0.75 * size)), size, size)
    f = size / 64.0
    zz, yy, xx = (g.astype(np.float32) for g in np.mgrid[: shape[0], : shape[1], : shape[2]])
    c = np.array(shape, np.float32) / 2 + f * rng.uniform(-3, 3, 3)
    r = f * np.array([u(7, 10), u(10, 14), u(11, 15)])
    dz, dy, dx = (zz - c[0]) / r[0], (yy - c[1]) / r[1], (xx - c[2]) / r[2]
    rho = np.sqrt(dz * dz + dy * dy + dx * dx)
    az, el = np.arctan2(dy, dx), np.arctan2(dz, np.sqrt(dy * dy + dx * dx))
    edge = 1 + u(0.03, 0.1) * np.cos(2 * az + u(0, 6)) + u(0.03, 0.1) * np.cos(3 * az + u(0, 6)) * np.cos(el)
    edge = edge + u(0.02, 0.08) * np.sin(2 * el + u(0, 6))
    label = rho < edge
    # four pulmonary veins (two-segment tubes leaving the posterior wall) and the appendage
    for sz in (-1, 1):
        for sx in (-1, 1):
            d0 = np.array([sz * u(0.3, 0.6), -u(0.5, 0.9), sx * u(0.6, 1.0)])
            d0 /= np.linalg.norm(d0)
            a = c + 0.8 * r * d0
            b = a + f * u(8, 13) * d0
            bend = d0 + rng.normal(0, 0.35, 3)
            e = b + f * u(5, 9) * bend / np.linalg.norm(bend)
            rad = f * u(1.3, 2.2)
            for p, q in ((a, b), (b, e)):
                v = q - p
                tt = np.clip(((zz - p[0]) * v[0] + (yy - p[1]) * v[1] + (xx - p[2]) * v[2]) / (v @ v), 0, 1)
                d2 = (zz - p[0] - tt * v[0]) ** 2 + (yy - p[1] - tt * v[1]) ** 2 + (xx - p[2] - tt * v[2]) ** 2
                label |= d2 < rad * rad
    ap = c + r * np.array([u(-0.3, 0.3), 0.7, u(0.7, 1.0)])
    label |= ((zz - ap[0]) ** 2 + (yy - ap[1]) ** 2 / 2 + (xx - ap[2]) ** 2) < (f * u(2.5, 3.5)) ** 2
    # unlabeled bright neighbours: the LV (anterior-inferior) and the aorta (a tube through all slices)
    lv_c = c + f * np.array([u(4, 8), u(14, 18), u(-10, -4)])
    lv = ((zz - lv_c[0]) / (f * 8)) ** 2 + ((yy - lv_c[1]) / (f * 9)) ** 2 + ((xx - lv_c[2]) / (f * 9)) ** 2 < 1
    ao = (yy - c[1] - f * u(2, 6)) ** 2 + (xx - c[2] + f * u(14, 18)) ** 2 < (f * u(3.5, 5)) ** 2
    tissue = ((yy - shape[1] / 2) / (shape[1] * 0.47)) ** 2 + ((xx - shape[2] / 2) / (shape[2] * 0.49)) ** 2 < 1
    blood = u(0.7, 0.9)
    img = np.where(tissue, u(0.3, 0.45), 0.05).astype(np.float32)
    img[(lv | ao) & ~label & tissue] = blood * u(0.85, 1.05)
    img[label] = blood
    img = gaussian_filter(img, u(0.6, 1.0))
    img *= _smooth_field(rng, shape, u(0.15, 0.3))
    img = _rician(rng, img, u(0.03, 0.07))
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), label.astype(np.uint8)


def _parts(n: int, fractions=(0.7, 0.1, 0.2)) -> tuple[int, int, int]:
    n_val = max(1, int(round(fractions[1] * n))) if n >= 3 else 0
    n_test = max(1, int(round(fractions[2] * n))) if n >= 3 else 0
    return n - n_val - n_test, n_val, n_test


def generate_phantom2d(
    out: str | os.PathLike, subjects: int = 40, seed: int = 0, size: int = 128, overwrite: bool = False
) -> dict:
    """Write a phantom2d dataset in the ACDC SSL4MIS layout under ``out``; returns a summary dict.

    Layout: ``data/slices/<case>_slice_<k>.h5`` (training slices; ``image`` float32 in [0, 1], ``label``
        uint8),
    ``data/<case>.h5`` (every case as a volume, slices first), ``train_slices.list``, ``train.list``,
    ``val.list``,
    ``test.list`` (70/10/20 % of subjects).
    """
    if subjects < 3:
        raise ValueError(f"generate_phantom2d(): subjects must be >= 3 (train, val, test), got {subjects}")
    if size < 32:
        raise ValueError(f"generate_phantom2d(): size must be >= 32, got {size}")
    out = Path(out)
    tmp = _fresh_dir(out, overwrite)
    (tmp / "data" / "slices").mkdir(parents=True)
    cases = [f"case{i + 1:03d}" for i in range(subjects)]
    n_train, n_val, _ = _parts(subjects)
    slice_ids: list[str] = []
    for i, case in enumerate(cases):
        img, lab = phantom2d_subject(seed, i, size)
        write_h5(tmp / "data" / f"{case}.h5", image=img, label=lab)
        if i < n_train:
            for k in range(img.shape[0]):
                write_h5(tmp / "data" / "slices" / f"{case}_slice_{k}.h5", image=img[k], label=lab[k])
                slice_ids.append(f"{case}_slice_{k}")
    (tmp / "train_slices.list").write_text("\n".join(slice_ids) + "\n")
    (tmp / "train.list").write_text("\n".join(cases[:n_train]) + "\n")
    (tmp / "val.list").write_text("\n".join(cases[n_train : n_train + n_val]) + "\n")
    (tmp / "test.list").write_text("\n".join(cases[n_train + n_val :]) + "\n")
    _publish(tmp, out)
    return {
        "kind": "phantom2d",
        "root": str(out),
        "subjects": subjects,
        "train": n_train,
        "val": n_val,
        "test": subjects - n_train - n_val,
        "train_slices": len(slice_ids),
        "size": size,
        "seed": seed,
    }


def generate_phantom3d(
    out: str | os.PathLike, subjects: int = 40, seed: int = 0, size: int = 64, overwrite: bool = False
) -> dict:
    """Write a phantom3d dataset in the LA UA-MT layout under ``out``; returns a summary dict.

    Layout: ``<case>/mri_norm2.h5`` (``image`` float32 z-scored, ``label`` uint8 0/1, arrays (X, Y, Z) as
        UA-MT
    stores them), ``train.list`` (80 %) and ``test.list`` (20 %). Validation is carved from the end of
    ``train.list`` by the loader.
    """
    if subjects < 3:
        raise ValueError(f"generate_phantom3d(): subjects must be >= 3, got {subjects}")
    if size < 32:
        raise ValueError(f"generate_phantom3d(): size must be >= 32, got {size}")
    out = Path(out)
    tmp = _fresh_dir(out, overwrite)
    cases = [f"case{i + 1:03d}" for i in range(subjects)]
    n_test = max(1, int(round(0.2 * subjects)))
    for i, case in enumerate(cases):
        img, lab = phantom3d_subject(seed, i, size)
        write_h5(tmp / case / "mri_norm2.h5", image=img.T, label=lab.T)
    (tmp / "train.list").write_text("\n".join(cases[: subjects - n_test]) + "\n")
    (tmp / "test.list").write_text("\n".join(cases[subjects - n_test :]) + "\n")
    _publish(tmp, out)
    return {
        "kind": "phantom3d",
        "root": str(out),
        "subjects": subjects,
        "train": subjects - n_test,
        "test": n_test,
        "size": size,
        "seed": seed,
    }


#: kind -> (marker file, generator, default size, ``arco data phantom --kind`` value); other phantom modules
#: (``phantom_mp``) add their entry when imported.
PHANTOMS: dict[str, tuple[str, Callable[..., dict], int, str]] = {
    "phantom2d": ("train_slices.list", generate_phantom2d, 128, "2d"),
    "phantom3d": ("train.list", generate_phantom3d, 64, "3d"),
}


def _check_subjects(path: Path, kind: str, subjects: int) -> None:
    """Warn when a ``data.subjects`` that was set (not the default) disagrees with the phantom on disk: it only
    applies when a phantom is generated."""
    from arco.data.config import DataConfig

    if subjects == DataConfig.subjects:
        return
    lists = [path / f"{part}.list" for part in ("train", "val", "test")]
    found = sum(len([ln for ln in f.read_text().splitlines() if ln.strip()]) for f in lists if f.is_file())
    if found and found != subjects:
        logger.warning(
            "data.subjects=%d is ignored: the %s phantom at %s has %d subjects (data.subjects only applies when a "
            "phantom is generated); set data.subjects=%d to silence this",
            subjects, kind, path, found, found,
        )  # fmt: skip


def require_phantom(root: str, kind: str, subjects: int = 40, seed: int = 0, size: int = 0) -> Path:
    """Return ``root`` when it holds a ``kind`` phantom (a `PHANTOMS` key); never generates one.

    A missing folder is an error that prints the ``arco data phantom`` command making it with these settings:
    generating data in place of a path that does not exist would turn a mistyped path into a run on new data.

    Raises:
        ConfigError: no root given. DataError: no ``kind`` phantom under ``root``.
    """
    marker, _, default_size, flag = PHANTOMS[kind]
    if not root:
        raise ConfigError(f"data.root must name the {kind} folder (make one with `arco data phantom --kind {flag}`)")
    path = Path(root)
    if (path / marker).is_file():
        _check_subjects(path, kind, subjects)
        return path
    opts = "".join(
        f" --{name} {value}"
        for name, value, default in (("subjects", subjects, 40), ("size", size, 0), ("seed", seed, 0))
        if value != default and not (name == "size" and value == default_size)
    )
    if path.is_dir() and any(path.iterdir()):
        found = f"{path} holds no {kind} dataset ({marker} {path_problem(path / marker)})"
    else:
        found = f"{path} {path_problem(path)}" if not path.is_dir() else f"{path} is an empty folder"
    raise DataError(
        f"no {kind} dataset at data.root: {found}. arco generates data only when asked (a mistyped path must not "
        f"turn into a fresh phantom): make it once with `arco data phantom --kind {flag} --out {path}{opts}`, or "
        "fix data.root (--data-root)"
    )


def ensure_phantom(root: str, kind: str, generate: bool, subjects: int, seed: int, size: int) -> Path:
    """Return ``root`` holding a ``kind`` phantom (a `PHANTOMS` key), generating it there when absent and
    ``generate`` (the explicit generators only: ``arco demo`` and ``arco study``; data loaders call
    :func:`require_phantom`).

    Raises:
        ConfigError: no root given. DataError: absent and ``generate`` is False, or ``root`` holds other files.
    """
    marker, gen, default_size, _ = PHANTOMS[kind]
    if not generate:
        return require_phantom(root, kind, subjects, seed, size)
    if not root:
        raise ConfigError(f"data.root must name the {kind} folder (generated there when absent)")
    path = Path(root)
    if not (path / marker).is_file():
        if path.exists() and any(path.iterdir()):
            raise DataError(f"{path} exists, is not empty and holds no {kind} dataset; choose another data.root")
        gen(path, subjects, seed, size or default_size)
    return path
