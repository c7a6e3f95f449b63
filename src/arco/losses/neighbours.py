"""L_nn, the diversity term: pull each student embedding to its k nearest teacher embeddings in a FIFO bank
(docs/methods.md).

Unlike the reference code (whose nearest-neighbour loss is computed on detached tensors and so carries no
gradient), the similarity is taken between the live student embedding and the bank, so the student is trained
by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arco._dist import gather_cat

__all__ = ["NearestNeighbourLoss", "nearest_neighbour_loss"]


def nearest_neighbour_loss(student: torch.Tensor, bank: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """``mean(1 - cos(student_b, n))`` over the ``k`` most similar valid rows ``n`` of ``bank`` for every
    ``b``.

    Args:
        student: ``(B, dim)``. bank: ``(K, dim)`` (unit rows, detached). valid: ``(K,)`` bool.

    Returns:
        Scalar; 0 attached to the graph when the bank has no valid entry.
    """
    s = F.normalize(student.float(), dim=-1)
    sim = (s @ bank.float().t()).masked_fill(~valid, -2.0)
    top, idx = sim.topk(k, dim=1)
    use = valid[idx].to(top.dtype)
    return ((1 - top) * use).sum() / use.sum().clamp_min(1.0)


class NearestNeighbourLoss(nn.Module):
    """k-nearest-neighbour attraction to a FIFO bank of teacher embeddings (paper: K = 36, k = 5).

    Args:
        dim: embedding width. bank_size: K. k: neighbours per embedding (``k <= bank_size``).

    ``forward(student (B, dim)) -> loss``; ``enqueue(teacher (B, dim))`` after the step. The bank starts empty
    (validity flags), so early steps use fewer than k neighbours, and the loss is 0 before the first enqueue.
    """

    def __init__(self, dim: int, bank_size: int = 36, k: int = 5) -> None:
        super().__init__()
        if min(dim, bank_size, k) < 1 or k > bank_size:
            raise ValueError(
                f"NearestNeighbourLoss: need dim >= 1 and 1 <= k <= bank_size, got dim={dim}, k={k}, "
                f"bank_size={bank_size}"
            )
        self.dim, self.bank_size, self.k = dim, bank_size, k
        self.register_buffer("bank", torch.zeros(bank_size, dim))
        self.register_buffer("bank_valid", torch.zeros(bank_size, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"NearestNeighbourLoss: {name} must be (B, {self.dim}), got {tuple(x.shape)}")

    def forward(self, student: torch.Tensor) -> torch.Tensor:
        self._check(student, "student")
        return nearest_neighbour_loss(student, self.bank, self.bank_valid, self.k)

    @torch.no_grad()
    def enqueue(self, teacher: torch.Tensor) -> None:
        """Push L2-normalised ``teacher`` rows (FIFO; when ``B > K`` only the last K are kept). Under DDP the rows of
        every rank are pushed, in rank order, so every rank holds the same bank."""
        self._check(teacher, "teacher")
        t = F.normalize(gather_cat(teacher.detach()).float(), dim=-1)[-self.bank_size :]
        pos = (self.ptr + torch.arange(t.shape[0], device=t.device)) % self.bank_size
        self.bank.index_copy_(0, pos, t.to(self.bank.dtype))
        self.bank_valid.index_fill_(0, pos, True)
        self.ptr.copy_((self.ptr + t.shape[0]) % self.bank_size)
