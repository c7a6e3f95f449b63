"""``phantom_mp``: a multi-parametric prostate-MRI-like phantom (the paper's MP-MRI setting is in-house data).

Each subject is a stack of axial slices seen by three co-registered "sequences": a T2-weighted image, an
apparent-diffusion-coefficient (ADC) map and a high-b-value diffusion image (DWI). Classes: background,
peripheral zone (PZ), transition zone (TZ) and a small lesion. The contrasts are chosen so that **no single
channel separates all classes** while two do (the reason MP-MRI is read as a set of sequences):

=========  =====  =====  =====  ======
tissue     T2     ADC    DWI    class
=========  =====  =====  =====  ======
muscle     dark   mid    dark   bg
fat        white  dark   dark   bg
PZ         bright high   dark   PZ
TZ         mid    mid    dark   TZ
lesion     dark   low    bright lesion
=========  =====  =====  =====  ======

In T2 a lesion looks like muscle, in ADC the TZ looks like muscle, in DWI everything but the lesion is dark;
T2 and ADC together separate all four. Each channel has its own bias field, blur and Rician noise, and its
own intensity unit (T2 arbitrary units ~1000, ADC in 1e-6 mm^2/s ~1600, DWI ~300), so per-channel
normalisation matters. Written as an nnU-Net v2 raw folder (``imagesTr/mp_001_0000.nii.gz`` (T2), ``_0001``
(ADC), ``_0002`` (DWI), ``labelsTr/``, ``imagesTs/`` + ``labelsTs/`` for the test subjects, ``dataset.json``
with ``channel_names``), 0.5 x 0.5 x 3 mm voxels at 128 px.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from arco.data.formats import write_image
from arco.data.outdir import staged_dir
from arco.data.phantom import PHANTOMS, _blob, _rician, _smooth_field

__all__ = ["MP_CHANNELS", "MP_CLASSES", "MP_TISSUES", "phantom_mp_subject", "generate_phantom_mp"]

MP_CHANNELS = ("T2", "ADC", "DWI")
MP_CLASSES = ("background", "PZ", "TZ", "lesion")
#: Mean intensity per tissue and channel (T2, ADC, DWI) in [0, 1] before bias, blur, noise and units.
MP_TISSUES = {
    "air": (0.02, 0.02, 0.02),
    "fat": (0.95, 0.15, 0.15),
    "muscle": (0.30, 0.55, 0.25),
    "PZ": (0.80, 0.80, 0.25),
    "TZ": (0.55, 0.55, 0.25),
    "lesion": (0.30, 0.25, 0.85),
}
_UNITS = (1000.0, 2000.0, 350.0)  # T2 (a.u.), ADC (1e-6 mm^2/s), DWI (a.u.)
_NOISE = ((0.03, 0.05), (0.03, 0.05), (0.05, 0.08))  # Rician sigma range per channel (DWI is noisier)


def phantom_mp_subject(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One subject: ``(image (3, S, size, size) float32 (T2, ADC, DWI) in scanner-like units, label (S, size,
    size) uint8)`` with S = 6..9 slices (base to apex)."""
    rng = np.random.default_rng([seed, index, 5])
    u = rng.uniform
    n = int(rng.integers(6, 10))
    f = size / 64.0
    t = np.linspace(-1.0, 1.0, n)[:, None, None]  # -1 = base, 1 = apex
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = yy[None], xx[None]
    cy, cx = size / 2 + f * u(-3, 3), size / 2 + f * u(-3, 3)
    taper = np.sqrt(np.clip(1 - 0.55 * t * t, 0.2, 1))  # the gland narrows toward base and apex
    gland_ry, gland_rx = f * u(9, 12) * taper, f * u(12, 15) * taper
    rot = u(-0.3, 0.3)
    amp, phase = rng.uniform(0, 0.05, 2), rng.uniform(0, 2 * np.pi, 2)
    gland = _blob(yy, xx, cy, cx, gland_ry, gland_rx, rot, amp, phase)
    tz_shift = gland_ry * u(0.2, 0.35)  # the TZ sits anterior (up), the PZ wraps it posteriorly
    tz = _blob(yy, xx, cy - tz_shift, cx, gland_ry * u(0.55, 0.7), gland_rx * u(0.55, 0.7), rot) & gland
    in_pz = rng.random() < 0.7
    ang = u(0.3, np.pi - 0.3) if in_pz else u(-np.pi + 0.6, -0.6)  # posterior (PZ) or anterior (TZ) side
    dist = gland_ry * (u(0.55, 0.75) if in_pz else u(0.1, 0.3))
    lr = f * u(2.5, 4.5) * np.clip(1 - np.abs(t - u(-0.4, 0.4)) / u(0.5, 0.9), 0, 1)  # a few slices only
    lesion = _blob(yy, xx, cy + dist * np.sin(ang), cx + dist * np.cos(ang), lr + 1e-3, lr * u(0.8, 1.2) + 1e-3)
    lesion &= gland & (lr > 0.7)
    body = _blob(yy, xx, size / 2, size / 2, f * u(26, 29), f * u(29, 31))
    inner = _blob(yy, xx, size / 2, size / 2, f * u(22, 24), f * u(25, 27))
    rectum = _blob(yy, xx, cy + gland_ry + f * u(4, 6), cx + f * u(-2, 2), f * u(3, 4.5), f * u(4, 6))
    label = np.zeros((n, size, size), np.uint8)
    label[gland & ~tz] = 1
    label[tz] = 2
    label[lesion] = 3
    shape = (n, size, size)
    names = list(MP_TISSUES)
    tissue = np.zeros(shape, np.int64)  # index into MP_TISSUES; 0 = air
    tissue[np.broadcast_to(body, shape)] = names.index("fat")
    tissue[np.broadcast_to(inner, shape)] = names.index("muscle")
    tissue[np.broadcast_to(rectum & inner, shape)] = names.index("air")  # gas in the rectal lumen
    for cls in (1, 2, 3):
        tissue[label == cls] = names.index(MP_CLASSES[cls])
    means = np.asarray(list(MP_TISSUES.values()), np.float32)  # (tissues, channels)
    channels = []
    for c in range(3):
        table = means[:, c] * rng.uniform(0.9, 1.1, len(names)).astype(np.float32)
        img = gaussian_filter(table[tissue], (0, u(0.5, 0.8), u(0.5, 0.8)))  # partial volume
        img *= _smooth_field(rng, shape, u(0.1, 0.25))
        img = _rician(rng, img, u(*_NOISE[c]))
        channels.append(img * _UNITS[c] * u(0.85, 1.15))
    return np.stack(channels).astype(np.float32), label


def _affine(size: int) -> np.ndarray:
    px = 0.5 * 128 / size  # 64 mm field of view in-plane, 3 mm slices
    affine = np.diag([px, px, 3.0, 1.0])
    affine[:3, 3] = (-32.0, -32.0, -12.0)
    return affine


def generate_phantom_mp(
    out: str | os.PathLike, subjects: int = 40, seed: int = 0, size: int = 64, overwrite: bool = False
) -> dict:
    """Write a phantom_mp dataset as an nnU-Net v2 raw folder under ``out``; returns a summary dict.

    The last 20 % of subjects (at least one) go to ``imagesTs``/``labelsTs`` (the test split); the loader holds
    ``val_fraction`` of the rest out for validation.
    """
    if subjects < 3:
        raise ValueError(f"generate_phantom_mp(): subjects must be >= 3 (train, val, test), got {subjects}")
    if size < 32:
        raise ValueError(f"generate_phantom_mp(): size must be >= 32, got {size}")
    out = Path(out)
    n_test = max(1, int(round(0.2 * subjects)))
    affine = _affine(size)
    with staged_dir(out, overwrite) as tmp:
        for i in range(subjects):
            case, part = f"mp_{i + 1:03d}", "Ts" if i >= subjects - n_test else "Tr"
            image, label = phantom_mp_subject(seed, i, size)
            for c in range(image.shape[0]):
                write_image(image[c], affine, tmp / f"images{part}" / f"{case}_{c:04d}.nii.gz")
            write_image(label, affine, tmp / f"labels{part}" / f"{case}.nii.gz")
        meta = {
            "name": "phantom_mp",
            "description": "arco multi-parametric prostate-MRI-like phantom (T2, ADC, DWI)",
            "channel_names": {str(i): c for i, c in enumerate(MP_CHANNELS)},
            "labels": {name: i for i, name in enumerate(MP_CLASSES)},
            "numTraining": subjects - n_test,
            "file_ending": ".nii.gz",
            "arco": {"seed": seed, "size": size, "subjects": subjects},
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {
        "kind": "phantom_mp",
        "root": str(out),
        "subjects": subjects,
        "train": subjects - n_test,
        "test": n_test,
        "channels": list(MP_CHANNELS),
        "size": size,
        "seed": seed,
    }


PHANTOMS["phantom_mp"] = ("dataset.json", generate_phantom_mp, 64, "mp")
