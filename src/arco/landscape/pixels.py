"""Per-pixel L_contrast of a trained ARCO stage-2 run on test slices (paper Fig. 3: "the z-axis denotes the loss value
at each pixel").

For one slice (:mod:`arco.landscape.slices`), the run's student and EMA teacher (both in eval mode: dropout off,
BatchNorm running statistics) see the clean image. Then every pixel is an anchor of its **ground-truth** class:

- its query is the student's representation at the pixel (fused map + linear pair, as in training);
- the positive of class c is the mean teacher representation over the slice's pixels of class c (the training
  positive is the mean over the class's candidates; on a labeled image those are all its pixels of class c);
- the negatives are ``num_negatives`` keys drawn from class c's bank of the checkpoint (``last.pt``: the banks at
  the end of training) by the run's sampler over enqueue-order blocks, with a generator seeded by ``seed``
  (:meth:`arco.losses.hard_negative.HardNegativeContrastiveLoss.anchor_losses`).

The value is the anchor's cross-entropy ``-log softmax([cos(q, p_c), cos(q, n_1..K)] / τ)[0]``: the term the anchor
would contribute to its class's mean in L_contrast (the loss then averages anchors per class and classes). A class
whose bank is empty gives NaN. The training anchors are further restricted (entropy percentile, ``p_c > δ_p``); the
landscape shows every pixel. Only ``finetune.contrast=reference`` with ``finetune.framework=arco`` has this
per-anchor form; other runs are refused with the option to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from arco.landscape.slices import SliceInput, choose_slices, slice_input

__all__ = ["PixelLandscape", "pixel_losses", "pixel_landscape", "check_pixel_run", "CHUNK"]

#: Anchors per call of ``anchor_losses`` (bounds the ``(chunk, num_negatives)`` draw tables; 256 x 256 slices fit).
CHUNK = 8192


@dataclass
class PixelLandscape:
    """One slice's per-pixel loss with what the figure shows next to it (all ``(H, W)`` arrays)."""

    case_id: str
    slice_index: int
    image: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    loss: np.ndarray
    class_names: list[str] = field(default_factory=list)
    strategy: str = ""
    seed: int = 0

    def class_means(self) -> dict[str, float]:
        """Mean loss over each ground-truth class's pixels (NaN where absent or the bank is empty)."""
        out = {}
        for c, name in enumerate(self.class_names):
            values = self.loss[self.label == c]
            out[name] = float(np.mean(values)) if values.size else float("nan")
        return out


def check_pixel_run(method) -> None:
    """Raise ``ValueError`` unless ``method``'s L_contrast has the per-anchor form (module docstring)."""
    cfg = method.cfg
    if cfg.framework != "arco":
        raise ValueError(
            f"landscape pixels needs ARCO's own L_contrast; this run trained finetune.framework={cfg.framework!r}, "
            "whose objective has no per-pixel anchor form here: use a run with finetune.framework=arco"
        )
    if cfg.contrast != "reference":
        raise ValueError(
            "landscape pixels needs the per-anchor loss against the class banks of finetune.contrast=reference; "
            f"this run trained finetune.contrast={cfg.contrast!r} (its negatives are other drawn pixels of the "
            "training batch, which a single slice does not have): use a run trained with finetune.contrast=reference"
        )


@torch.no_grad()
def pixel_losses(
    method, inp: SliceInput, generator: torch.Generator, strategy: str | None = None, chunk: int = CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """``(loss, prediction)``, both ``(H, W)``, of the slice in ``inp`` (module docstring). ``method`` is an
    ``ArcoFinetuneMethod`` with a ``reference`` L_contrast; its modules are put in eval mode."""
    from arco.losses.hard_negative import class_means
    from arco.methods._arco_common import levels

    check_pixel_run(method)
    method.set_training(False)
    x, label = inp.image.to(method.device), inp.label.to(method.device)
    s_out, t_out = method.student(x), method.teacher(x)
    keys = method.teacher_rep_head.dense(levels(t_out))  # (1, dim, *S)
    area = x.shape[-2] * x.shape[-1]
    first = 0 if inp.plane is None else inp.plane * area  # flat positions of the slice in (1, *S)
    index = torch.arange(first, first + area, device=x.device)
    lab = label.reshape(-1)[index]
    k = keys.float().movedim(1, -1).reshape(-1, keys.shape[1])[index]
    positive, _ = class_means(k, lab, torch.ones_like(lab, dtype=torch.bool), method.num_classes)
    s_levels = levels(s_out)
    losses = []
    for start in range(0, area, chunk):
        part = index[start : start + chunk]
        query = method.rep_pair(method.rep_head.forward_at(s_levels, part))
        losses.append(method.contrast.anchor_losses(query, lab[start : start + chunk], positive, generator, strategy))
    loss = torch.cat(losses).view(x.shape[-2], x.shape[-1])
    pred = s_out.logits.argmax(1)[0]
    pred = pred if inp.plane is None else pred[inp.plane]
    return loss.cpu().numpy().astype(np.float32), pred.cpu().numpy()


def pixel_landscape(
    run,
    cases: Sequence[str] | None = None,
    slice_index: int | None = None,
    seed: int = 0,
    strategy: str | None = None,
    split: str = "test",
) -> list[PixelLandscape]:
    """The per-pixel loss of every chosen slice of a run rebuilt by :func:`arco.contrast_variance.load_run`.

    Args:
        run: the loaded run (method with the checkpoint's weights and banks, and its data).
        cases / slice_index: as :func:`arco.landscape.slices.choose_slices` (default: one case showing every class).
        seed: seeds the bank draws (one generator, drawn in order over the slices' pixels).
        strategy: override the run's sampler (``ns``, ``sg``, ``sag``).
        split: ``test`` or ``val``.
    """
    from arco._checks import choice

    check_pixel_run(run.method)
    choice("split", split, ("test", "val"))
    data, m = run.data, run.method
    strategy = strategy or m.cfg.sampler
    names = list(getattr(data, "class_names", None) or [str(c) for c in range(m.num_classes)])
    out = []
    for volume, k in choose_slices(getattr(data, split), m.num_classes, cases, slice_index):
        inp = slice_input(volume, k, data.spatial_dims, data.patch_size)
        gen = torch.Generator(device=m.device).manual_seed(int(seed))
        loss, pred = pixel_losses(m, inp, gen, strategy)
        out.append(
            PixelLandscape(volume.case_id, k, inp.plane_image(), inp.plane_label(), pred, loss, names, strategy, seed)
        )
    return out
