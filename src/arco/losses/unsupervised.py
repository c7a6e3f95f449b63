"""L_unsup: cross-entropy against confident teacher pseudo-labels (SPEC §5; reference threshold 0.97)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["unsup_loss"]

#: Confidence threshold of the reference code.
CONFIDENCE_THRESHOLD = 0.97


def unsup_loss(
    logits: torch.Tensor,
    pseudo: torch.Tensor,
    confidence: torch.Tensor,
    threshold: float = CONFIDENCE_THRESHOLD,
) -> torch.Tensor:
    """Mean pixel cross-entropy over pixels with ``confidence >= threshold``; the others do not count at all.

    Args:
        logits: ``(B, C, *S)`` student logits on the strong view.
        pseudo: ``(B, *S)`` int64 pseudo-labels.
        confidence: ``(B, *S)`` float teacher confidence (e.g. max softmax probability).
        threshold: minimum confidence.

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
    return (ce * mask).sum() / mask.sum().clamp_min(1.0)
