"""Checkpoint files: what they hold, how to write them atomically and how to load a predictor safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from arco._checks import CheckpointError
from arco._io import atomic_torch_save

__all__ = ["FORMAT", "resolve_checkpoint", "save_checkpoint", "load_checkpoint", "load_predictor"]

FORMAT = 1


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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs) and check its format."""
    import torch

    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt / truncated / not a torch file
        raise CheckpointError(
            f"cannot read checkpoint {p}: {exc}. The file is corrupt or not an arco checkpoint; "
            "use the run's checkpoints/best.pt or last.pt."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT or "predictor" not in state:
        raise CheckpointError(f"{p} is not an arco checkpoint (format {FORMAT} with a 'predictor' entry)")
    return state


def load_predictor(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the segmentation network stored in a checkpoint, in eval mode.

    Returns ``(model, meta)`` where ``model(x).logits`` are the class scores and ``meta`` holds the checkpoint's
    ``data`` description (dataset, spatial_dims, num_classes, class_names, patch_size, normalization) and ``config``.
    Raises ``CheckpointError`` when the weights do not fit the stored architecture.
    """
    from arco.models import MODELS

    state = load_checkpoint(path, map_location)
    pred = state["predictor"]
    model = MODELS.build(pred["arch"], **pred.get("kwargs", {}))
    try:
        model.load_state_dict(pred["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {resolve_checkpoint(path)} does not fit architecture {pred['arch']!r} "
            f"with {pred.get('kwargs')}: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    meta = {"data": state.get("data", {}), "config": state.get("config", {}), "path": str(resolve_checkpoint(path))}
    return model, meta
