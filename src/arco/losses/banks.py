"""Per-class FIFO memory banks of teacher keys on the training device (the reference's ``memobank``).

The reference code keeps one Python list per class, concatenates each step's keys at the end and keeps the last
``queue_size`` (30 000; 50 000 for background) on the CPU. :class:`ClassBanks` holds the same content as one
preallocated ``(C, K_max + 1, dim)`` device tensor with a ring pointer per class (the extra slot absorbs the writes
of invalid rows: static shapes, no host sync). Keys are stored L2-normalised (they only enter cosine
similarities). Logical position ``l`` of class c (0 = oldest) lives at physical slot ``(start_c + l) % K_c``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from arco._dist import gather_cat

__all__ = ["ClassBanks"]


class ClassBanks(nn.Module):
    """One FIFO bank of ``dim``-d keys per class, with its own capacity.

    Args:
        capacities: keys kept per class (reference: 50 000 for class 0, 30 000 for the others).
        dim: key width.
        init_key: start every bank with one zero key, as the reference does (``torch.zeros(1, dim)``; it stays,
            as a key of cosine 0, until ``K_c`` later keys push it out). ``False``: banks start empty.

    Buffers (checkpointed): ``keys (C, K_max + 1, dim)``, ``count (C,)`` valid keys, ``ptr (C,)`` next write slot.
    """

    def __init__(self, capacities: Sequence[int], dim: int, init_key: bool = False) -> None:
        super().__init__()
        caps = [int(k) for k in capacities]
        if not caps or min(caps) < 1 or dim < 1:
            raise ValueError(f"ClassBanks: capacities must be positive and dim >= 1, got {caps} and {dim}")
        self.dim, self.kmax = int(dim), max(caps)
        self.register_buffer("capacity", torch.tensor(caps, dtype=torch.long), persistent=False)
        self.register_buffer("keys", torch.zeros(len(caps), self.kmax + 1, self.dim))
        self.register_buffer("count", torch.full((len(caps),), int(init_key), dtype=torch.long))
        self.register_buffer("ptr", torch.full((len(caps),), int(init_key), dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return int(self.capacity.shape[0])

    def physical(self, cls: torch.Tensor, logical: torch.Tensor) -> torch.Tensor:
        """Flat rows into :meth:`table` of logical positions ``logical`` (any shape) of classes ``cls`` (same
        shape, or broadcastable)."""
        cap, count, ptr = self.capacity[cls], self.count[cls], self.ptr[cls]
        start = torch.where(count >= cap, ptr, 0)
        return cls * (self.kmax + 1) + (start + logical) % cap

    def table(self) -> torch.Tensor:
        """``(C * (K_max + 1), dim)`` view of every slot (rows from :meth:`physical`)."""
        return self.keys.view(-1, self.dim)

    @torch.no_grad()
    def push(self, keys: torch.Tensor, valid: torch.Tensor) -> None:
        """Append each class's valid ``keys (C, M, dim)`` (``valid (C, M)`` bool), in order, keeping the newest
        ``K_c``: the reference's ``cat(queue, keys)[-K_c:]``. Under DDP the keys of every rank are appended in rank
        order, so every rank holds the same banks."""
        keys, valid = gather_cat(keys.detach(), dim=1), gather_cat(valid, dim=1)
        cap = self.capacity[:, None]
        rank = valid.long().cumsum(1) - 1
        n_new = valid.sum(1, keepdim=True)
        skip = (n_new - cap).clamp_min(0)  # more new keys than room: the oldest of them never land
        keep = valid & (rank >= skip)
        slot = torch.where(keep, (self.ptr[:, None] + rank - skip) % cap, self.kmax)
        normed = F.normalize(keys.float(), dim=-1).to(self.keys.dtype)
        self.keys.scatter_(1, slot.unsqueeze(-1).expand(-1, -1, self.dim), normed)
        landed = n_new.squeeze(1) - skip.squeeze(1)
        self.ptr.copy_((self.ptr + landed) % self.capacity)
        self.count.copy_(torch.minimum(self.count + landed, self.capacity))

    @torch.no_grad()
    def push_rows(self, cls: torch.Tensor, keys: torch.Tensor) -> None:
        """:meth:`push` for keys given as rows: ``keys (N, dim)`` of classes ``cls (N,)`` (sorted by class, in
        order within a class). Single process only (no gather across ranks)."""
        num = self.num_classes
        n_new = torch.zeros(num, dtype=torch.long, device=cls.device).index_add_(0, cls, torch.ones_like(cls))
        start = torch.cumsum(n_new, 0) - n_new
        rank = torch.arange(cls.numel(), device=cls.device) - start[cls]
        cap = self.capacity
        skip = (n_new - cap).clamp_min(0)
        keep = rank >= skip[cls]
        cls, rank, keys = cls[keep], rank[keep], keys[keep]
        rows = cls * (self.kmax + 1) + (self.ptr[cls] + rank - skip[cls]) % cap[cls]
        normed = F.normalize(keys.float(), dim=-1).to(self.keys.dtype)
        self.table().index_copy_(0, rows, normed)
        landed = n_new - skip
        self.ptr.copy_((self.ptr + landed) % cap)
        self.count.copy_(torch.minimum(self.count + landed, cap))

    def extra_repr(self) -> str:
        return f"capacities={self.capacity.tolist()}, dim={self.dim}"
