"""Which test slices ``arco landscape pixels`` shows, and the network input that holds each of them.

- Default choice: the first case of the split (in split order) that has a slice showing every class, and in it the
  slice whose rarest class covers the most pixels (so every class is visible); when no slice of any case shows every
  class, the slice with the most classes (ties: the larger rarest class, then the earlier case and slice).
- 2D runs: slice ``k`` of the case (array axis 0) resized to the network's patch size, as inference does (bilinear
  image, nearest label); the landscape is shown at that size.
- 3D runs: one network window (``patch_size``) holding slice ``k``: along axis 0 the window centred on ``k``, in the
  plane centred on the slice's foreground (its bounding-box centre; the volume's centre when the slice has none),
  clamped into the volume and zero-padded where the volume is smaller than the window; the landscape is the window's
  plane ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SliceInput", "slice_score", "default_slice", "choose_slices", "slice_input"]


@dataclass
class SliceInput:
    """A network input holding one slice: ``image (1, C_in, *patch)`` float32, ``label (1, *patch)`` int64,
    ``plane`` (the slice's index along the window's first axis in 3D; ``None`` in 2D)."""

    image: torch.Tensor
    label: torch.Tensor
    plane: int | None

    def plane_image(self) -> np.ndarray:
        """``(H, W)`` channel 0 of the slice."""
        x = self.image[0, 0]
        return (x if self.plane is None else x[self.plane]).numpy()

    def plane_label(self) -> np.ndarray:
        y = self.label[0]
        return (y if self.plane is None else y[self.plane]).numpy()


def slice_score(label: np.ndarray) -> np.ndarray:
    """``(D, 2)`` per slice of ``label (D, H, W)``: (number of classes present, pixels of its rarest present class)."""
    flat = np.asarray(label).reshape(label.shape[0], -1).astype(np.int64)
    counts = np.stack([np.bincount(row, minlength=int(flat.max()) + 1) for row in flat])
    present = counts > 0
    rarest = np.where(present, counts, np.iinfo(np.int64).max).min(axis=1)
    return np.stack([present.sum(axis=1), rarest], axis=1)


def default_slice(label: np.ndarray) -> int:
    """The slice of ``label (D, H, W)`` with the most classes, ties broken by the larger rarest class, then the
    lower index."""
    score = slice_score(label)
    order = np.lexsort((np.arange(len(score)), -score[:, 1], -score[:, 0]))
    return int(order[0])


def choose_slices(
    volumes: Sequence, num_classes: int, cases: Sequence[str] | None = None, slice_index: int | None = None
) -> list[tuple[object, int]]:
    """``[(volume, slice)]``: the given ``cases`` (ids; every one must exist and have a label) with ``slice_index``
    or each one's :func:`default_slice`, or the module docstring's default choice of one case.

    Raises:
        ValueError: an unknown case id, a case without a label, or a slice outside the case.
    """
    labeled = [v for v in volumes if v.label is not None]
    if not labeled:
        raise ValueError("no case of the split has a ground-truth label: the landscape needs one")
    if cases:
        by_id = {v.case_id: v for v in volumes}
        unknown = [c for c in cases if c not in by_id]
        if unknown:
            raise ValueError(f"--case: unknown case(s) {unknown}; cases of the split: {sorted(by_id)}")
        chosen = [by_id[c] for c in cases]
        if any(v.label is None for v in chosen):
            raise ValueError(f"--case: {[v.case_id for v in chosen if v.label is None]} have no ground-truth label")
    else:
        scored = [(v, slice_score(np.asarray(v.label))[default_slice(np.asarray(v.label))]) for v in labeled]
        full = [v for v, score in scored if score[0] >= num_classes]
        chosen = [full[0] if full else max(scored, key=lambda t: (t[1][0], t[1][1]))[0]]  # max keeps the first
    out = []
    for v in chosen:
        depth = np.asarray(v.label).shape[0]
        k = default_slice(np.asarray(v.label)) if slice_index is None else int(slice_index)
        if not 0 <= k < depth:
            raise ValueError(f"--slice {k} is outside case {v.case_id!r}, which has slices 0..{depth - 1}")
        out.append((v, k))
    return out


def _channels(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image[None] if image.ndim == 3 else image  # (C, D, H, W)


def _window(centre: int, size: int, length: int) -> int:
    """Start of a ``size`` window centred on ``centre`` and clamped into ``[0, length)`` (0 when it does not fit)."""
    return int(min(max(centre - size // 2, 0), max(length - size, 0)))


def slice_input(volume, k: int, spatial_dims: int, patch_size: Sequence[int]) -> SliceInput:
    """The network input holding slice ``k`` of ``volume`` (module docstring)."""
    image, label = _channels(volume.image), np.asarray(volume.label).astype(np.int64)
    patch = tuple(int(s) for s in patch_size)
    if spatial_dims == 2:
        x = torch.from_numpy(np.ascontiguousarray(image[:, k]))[None]  # (1, C, H, W)
        y = torch.from_numpy(np.ascontiguousarray(label[k]))[None, None].float()
        if tuple(x.shape[-2:]) != patch:
            x = F.interpolate(x, size=patch, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=patch, mode="nearest")
        return SliceInput(x, y[:, 0].long(), None)
    fg = np.argwhere(label[k] > 0)
    centre = (fg.min(0) + fg.max(0)) // 2 if len(fg) else np.array(label.shape[1:]) // 2
    starts = [_window(k, patch[0], label.shape[0])]
    starts += [_window(int(c), p, n) for c, p, n in zip(centre, patch[1:], label.shape[1:])]
    crop = tuple(slice(s, s + p) for s, p in zip(starts, patch))
    x = np.zeros((image.shape[0], *patch), dtype=np.float32)
    y = np.zeros(patch, dtype=np.int64)
    part = image[(slice(None), *crop)]
    x[(slice(None), *(slice(0, n) for n in part.shape[1:]))] = part
    y[tuple(slice(0, n) for n in part.shape[1:])] = label[crop]
    return SliceInput(torch.from_numpy(x)[None], torch.from_numpy(y)[None], k - starts[0])
