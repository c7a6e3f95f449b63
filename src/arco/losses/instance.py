"""Stage-1 relational instance discrimination L_inst (paper App. E(1); docs/methods.md).

The student's softmax over cosine similarities to a queue of K mined teacher embeddings (temperature tau_s) is
pulled to the teacher's (tau_t, sharper) by KL(p_teacher || p_student).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arco._dist import gather_cat

__all__ = ["RelationalInstanceLoss", "relational_kl"]


def relational_kl(
    student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor, tau_s: float, tau_t: float
) -> torch.Tensor:
    """``mean_b,s KL(softmax(t.q/tau_t) || softmax(s.q/tau_s))`` with L2-normalised ``student``/``teacher``
    ``(B, S, dim)`` and ``queue`` ``(S, K, dim)``; the teacher side is detached."""
    s = F.normalize(student.float(), dim=-1)
    with torch.no_grad():
        t = F.normalize(teacher.float(), dim=-1)
        log_pt = torch.einsum("bsd,skd->bsk", t, queue.float()).div(tau_t).log_softmax(-1)
    log_ps = torch.einsum("bsd,skd->bsk", s, queue.float()).div(tau_s).log_softmax(-1)
    return F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(-1).mean()


class RelationalInstanceLoss(nn.Module):
    """KL between teacher and student relation distributions over a FIFO queue of teacher embeddings.

    Args:
        dim: embedding width.
        queue_size: K, number of mined views kept (paper: 36).
        tau_s: student temperature (0.1). tau_t: teacher temperature (0.01).
        slots: independent queues; 1 for the global branch, the number of windows for the local branch (window
            ``j`` of a sample is compared only with window ``j`` entries).

    ``forward(student, teacher)`` takes ``(B, dim)`` (``slots == 1``) or ``(B, slots, dim)`` and returns the
    KL averaged over batch and slots. ``enqueue(teacher)`` pushes the batch afterwards (ring buffer; no host
    sync). The queue starts as random unit vectors, as in MoCo.
    """

    def __init__(self, dim: int, queue_size: int = 36, tau_s: float = 0.1, tau_t: float = 0.01, slots: int = 1) -> None:
        super().__init__()
        if min(dim, queue_size, slots) < 1 or tau_s <= 0 or tau_t <= 0:
            raise ValueError(
                f"RelationalInstanceLoss: dim, queue_size, slots must be >= 1 and temperatures > 0, got "
                f"dim={dim}, queue_size={queue_size}, slots={slots}, tau_s={tau_s}, tau_t={tau_t}"
            )
        self.dim, self.queue_size, self.slots = dim, queue_size, slots
        self.tau_s, self.tau_t = tau_s, tau_t
        self.register_buffer("queue", F.normalize(torch.randn(slots, queue_size, dim), dim=-1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def _shape(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if x.dim() == 2 and self.slots == 1:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1:] != (self.slots, self.dim):
            raise ValueError(
                f"RelationalInstanceLoss: {name} must be (B, {self.dim})"
                f"{' or ' if self.slots == 1 else ''}(B, {self.slots}, {self.dim}), got {tuple(x.shape)}"
            )
        return x

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s, t = self._shape(student, "student"), self._shape(teacher, "teacher")
        if s.shape != t.shape:
            raise ValueError(f"RelationalInstanceLoss: student {tuple(s.shape)} != teacher {tuple(t.shape)}")
        return relational_kl(s, t, self.queue, self.tau_s, self.tau_t)

    @torch.no_grad()
    def enqueue(self, teacher: torch.Tensor) -> None:
        """Push ``teacher`` embeddings (FIFO; when ``B > K`` only the last K are kept). Under DDP the embeddings
        of every rank are pushed, in rank order, so every rank holds the same queue."""
        t = gather_cat(self._shape(teacher, "teacher").detach())
        t = F.normalize(t.float(), dim=-1)[-self.queue_size :]
        pos = (self.ptr + torch.arange(t.shape[0], device=t.device)) % self.queue_size
        self.queue.index_copy_(1, pos, t.transpose(0, 1).to(self.queue.dtype))
        self.ptr.copy_((self.ptr + t.shape[0]) % self.queue_size)
