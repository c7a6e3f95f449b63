"""L_unsup: cross-entropy against confident teacher pseudo-labels (docs/methods.md; reference threshold 0.97).

Two weightings:

- ``"mask"`` (the paper): the mean cross-entropy over the pixels whose confidence reaches the threshold; the others
  do not count at all.
- ``"ratio"`` (the reference code's ``compute_unsupervised_loss``, inherited from ReCo): the cross-entropy of *every*
  pixel, weighted per image by the fraction of its pixels whose confidence reaches the threshold. Early in training,
  when the teacher is confident almost nowhere, the term is small: the weighting acts as an automatic ramp-up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["unsup_loss", "UNSUP_WEIGHTINGS"]

UNSUP_WEIGHTINGS = ("mask", "ratio")

#: Confidence threshold of the reference code.
CONFIDENCE_THRESHOLD = 0.97


def unsup_loss(
    logits: torch.Tensor,
    pseudo: torch.Tensor,
    confidence: torch.Tensor,
    threshold: float = CONFIDENCE_THRESHOLD,
    weighting: str = "mask",
) -> torch.Tensor:
    """Pseudo-label cross-entropy, ``"mask"``: mean over pixels with ``confidence >= threshold``; ``"ratio"``:
    ``mean_b,p(r_b * CE_bp)`` with ``r_b`` the fraction of confident pixels of image ``b`` (reference code).

    Args:
        logits: ``(B, C, *S)`` student logits on the strong view.
        pseudo: ``(B, *S)`` int64 pseudo-labels.
        confidence: ``(B, *S)`` float teacher confidence (e.g. max softmax probability).
        threshold: minimum confidence.
        weighting: ``"mask"`` or ``"ratio"``.

    Returns:
        Scalar; exactly 0 (still attached to ``logits``' graph) when no pixel is confident.
    """
    spatial = logits.shape[:1] + logits.shape[2:]
    if pseudo.shape != spatial or confidence.shape != spatial or pseudo.dtype != torch.long:
        raise ValueError(
            f"unsup_loss: pseudo (int64) and confidence must have shape {tuple(spatial)}, got "
            f"{pseudo.dtype} {tuple(pseudo.shape)} and {tuple(confidence.shape)}"
        )
    ce = F.cross_entropy(logits.float(), pseudo, reduction="none")
    mask = (confidence >= threshold).to(ce.dtype)
    if weighting == "ratio":
        ratio = mask.flatten(1).mean(1).view(-1, *([1] * (ce.dim() - 1)))
        return (ce * ratio).mean()
    if weighting != "mask":
        raise ValueError(f"unsup_loss: weighting must be one of {UNSUP_WEIGHTINGS}, got {weighting!r}")
    return (ce * mask).sum() / mask.sum().clamp_min(1.0)
