"""Checkpoint files: what they hold, how to write them atomically and how to load a predictor safely.

Format history. Format 2 renamed ARCO's BYOL head from ``predictor`` to ``global_predictor`` in ``modules`` (the
checkpoint's ``predictor`` entry is, as before, the segmentation network that ``arco predict`` rebuilds); format 1
files are upgraded when they are loaded (:func:`upgrade_checkpoint`), so they still serve ``arco evaluate`` /
``predict``, ``--init`` and ``--resume``.

A file that is not a readable arco checkpoint is reported as what it is — empty, truncated or damaged, not a torch
file (naming the format it looks like), a torch file holding pickled objects or a plain ``state_dict``, an arco
checkpoint of another format version — with the fix.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from arco._checks import CheckpointError
from arco._io import atomic_torch_save

__all__ = [
    "FORMAT",
    "describe_checkpoint",
    "upgrade_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_predictor",
]

FORMAT = 2
#: Component names renamed by format 2, per method: ``{method: {old name: new name}}``.
_RENAMED_IN_2 = {
    "arco-pretrain": {"predictor": "global_predictor"},
    "arco-finetune": {"predictor": "global_predictor"},
}
_FIX = "use a checkpoint written by `arco train` (RUN/<stage>/checkpoints/best.pt or last.pt)"
_MAGIC = (  # what a file that is not a torch checkpoint looks like, by its first bytes
    (b"\x1f\x8b", "a gzip file (e.g. a .nii.gz scan)"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89PNG", "a PNG image"),
    (b"{", "a JSON/text file"),
)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint file or a run folder (-> ``<run>/checkpoints/best.pt``, else ``last.pt``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            for cand in (p / "checkpoints" / name, p / name):
                if cand.is_file():
                    return cand
        raise CheckpointError(
            f"no checkpoint in {p}: expected {p / 'checkpoints' / 'best.pt'} or last.pt. "
            "Give a run folder written by `arco train` or the path of a .pt file."
        )
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; give a run folder or a .pt file written by `arco train`")
    return p


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` (plain tensors/containers only, so it loads with ``weights_only=True``) atomically."""
    atomic_torch_save({"format": FORMAT, **state}, path)


def describe_checkpoint(state: dict[str, Any]) -> str:
    """``"an arco checkpoint of stage 'finetune' (method 'arco-finetune', unet, iteration 30)"``."""
    arch = (state.get("predictor") or {}).get("arch", "unknown architecture")
    return (
        f"an arco checkpoint of stage {state.get('stage')!r} (method {state.get('method')!r}, {arch}, "
        f"iteration {state.get('iteration')})"
    )


def _unreadable(p: Path, exc: Exception) -> CheckpointError:
    """Why ``torch.load`` failed on ``p``: empty, truncated/damaged, not a torch file, or pickled objects."""
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
    if size == 0:
        what = "is empty (0 bytes): its write was cut short"
    elif head.startswith(b"PK\x03\x04"):  # torch's zip format
        if not zipfile.is_zipfile(p):
            what = f"is a truncated torch file ({size} bytes; its end is missing): its write was cut short"
        else:
            with zipfile.ZipFile(p) as zf:
                bad = zf.testzip()
            what = (
                f"is a damaged torch file (member {bad} fails its checksum)"
                if bad
                else "is a torch file holding pickled Python objects (e.g. a whole model), which arco does not load "
                "(it reads weights only, so that loading a file never runs code from it)"
            )
    elif head.startswith(b"\x80"):  # a legacy (pickle) torch file
        what = f"is a legacy torch file that cannot be read ({type(exc).__name__}: truncated, damaged or not weights)"
    else:
        kind = next((k for magic, k in _MAGIC if head.startswith(magic)), f"a file starting with {head!r}")
        what = f"is not a torch file: it looks like {kind}"
    return CheckpointError(f"checkpoint {p} {what}. Fix: {_FIX}.")


def _check_content(p: Path, state: Any) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {p} is a torch file holding a {type(state).__name__}, not an arco checkpoint. Fix: {_FIX}."
        )
    if "format" not in state:
        tensors = [k for k, v in state.items() if hasattr(v, "shape")]
        what = f"a dict with keys {sorted(map(str, state))[:6]}"
        if tensors and len(tensors) == len(state):
            n = len(tensors)
            what = f"a plain state_dict ({n} tensor{'s' * (n != 1)}, e.g. {tensors[0]!r})"
        raise CheckpointError(
            f"checkpoint {p} is a torch file holding {what}, not an arco checkpoint (which also records the "
            f"architecture, the data and the config). Fix: {_FIX}."
        )
    if state.get("format") not in range(1, FORMAT + 1):
        raise CheckpointError(
            f"checkpoint {p} is an arco checkpoint of format {state.get('format')!r}; this arco reads formats 1 to "
            f"{FORMAT}. Fix: use the arco version that wrote it, or retrain."
        )
    if "predictor" not in state:
        raise CheckpointError(f"checkpoint {p} is an arco checkpoint without its 'predictor' entry. Fix: {_FIX}.")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs) and check that it is an arco one.

    Raises:
        CheckpointError: naming the file and what it is (empty, truncated, damaged, not a torch file, pickled
            objects, a plain state_dict, another format version) with the fix.
    """
    import torch

    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable files; diagnosed below
        raise _unreadable(p, exc) from exc
    _check_content(p, state)
    return upgrade_checkpoint(state)


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dict of an older format as the current format reads it (a new dict; tensors are shared).

    Format 1 -> 2: ARCO's BYOL head ``modules["predictor"]`` becomes ``modules["global_predictor"]`` (methods
    ``arco-pretrain`` / ``arco-finetune``). Saving the result with :func:`save_checkpoint` converts a file.
    """
    out = dict(state)
    if out.get("format", FORMAT) < 2:
        renamed = _RENAMED_IN_2.get(str(out.get("method")), {})
        if "modules" in out:
            out["modules"] = {renamed.get(k, k): v for k, v in out["modules"].items()}
        out["format"] = 2
    return out


def load_predictor(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the segmentation network stored in a checkpoint, in eval mode.

    Returns ``(model, meta)`` where ``model(x).logits`` are the class scores and ``meta`` holds the checkpoint's
    ``data`` description (dataset, spatial_dims, num_classes, class_names, patch_size, normalization) and ``config``.
    Raises ``CheckpointError`` when the architecture is unknown or the weights do not fit it.
    """
    from arco.models import MODELS

    p = resolve_checkpoint(path)
    state = load_checkpoint(p, map_location)
    pred = state["predictor"]
    if pred.get("arch") not in MODELS:
        raise CheckpointError(
            f"checkpoint {p} is {describe_checkpoint(state)} whose network {pred.get('arch')!r} this arco does not "
            f"know (known: {', '.join(MODELS.names())}). Fix: import the plug-in that registers it, or use a "
            "checkpoint of a built-in network."
        )
    try:
        model = MODELS.build(pred["arch"], **pred.get("kwargs", {}))
        model.load_state_dict(pred["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {p} ({describe_checkpoint(state)}) does not fit architecture {pred['arch']!r} "
            f"with {pred.get('kwargs')}: {str(exc).splitlines()[0]}. Fix: {_FIX}, unmodified."
        ) from exc
    model.eval()
    meta = {"data": state.get("data", {}), "config": state.get("config", {}), "path": str(p)}
    return model, meta
