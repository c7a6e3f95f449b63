"""Stage-2 anatomical pixel contrastive loss L_contrast (paper eq. E.2/E.3, SPEC §5).

For every class c present in the batch, ``num_queries`` pixels of class c are drawn with the chosen sampler
(NS/SG/SAG, :func:`arco.sampling.sample_per_class`). Queries are the student representations at those pixels;
the positive key is the mean teacher representation of class c over the same draws (the sampler's estimate of
the class mean, detached); the negatives are ``num_negatives`` teacher keys per query drawn uniformly among
the sampled keys of the other classes in this batch and the per-class memory bank. logits = cosine / tau;
cross-entropy with the positive as target, averaged over the valid queries of a class, then over the classes
that are present and have negatives. Classes are always addressed by their label value, so an absent class
never shifts the others (the reference code's bug); absent classes contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from arco import sampling
from arco._dist import gather_cat

__all__ = ["PixelContrastiveLoss", "pixel_contrastive_loss"]

RepFn = Callable[[torch.Tensor], torch.Tensor]


def pixel_contrastive_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    ok: torch.Tensor,
    bank: torch.Tensor,
    bank_valid: torch.Tensor,
    num_negatives: int = 512,
    tau: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE of per-class queries against the class-mean positive and sampled negatives (eq. E.2/E.3).

    Args:
        query: ``(C, Q, dim)`` unit-norm student representations, row c holding class-c draws (with grad).
        key: ``(C, Q, dim)`` unit-norm teacher representations at the same pixels (detached).
        ok: ``(C, Q)`` bool, which draws are real.
        bank: ``(C, K, dim)`` unit-norm teacher keys of earlier steps, row c of class c. bank_valid: ``(C,
        K)`` bool.
        num_negatives: negatives per query, drawn with replacement from the other classes' valid keys.
        tau: temperature.
        generator: for the negative draws (on the tensors' device).

    Returns:
        Scalar float32; 0 attached to ``query``'s graph when no class has both queries and negatives.
    """
    c, q_num, dim = query.shape
    okf = ok.to(query.dtype)
    count = okf.sum(1)
    positive = F.normalize((key * okf.unsqueeze(-1)).sum(1), dim=-1)  # (C, dim)
    arange = torch.arange(c, device=query.device)
    pool = torch.cat([key.reshape(-1, dim), bank.reshape(-1, dim).to(key.dtype)])
    pool_class = torch.cat([arange.repeat_interleave(q_num), arange.repeat_interleave(bank.shape[1])])
    pool_ok = torch.cat([ok.reshape(-1), bank_valid.reshape(-1)])
    allowed = pool_ok.unsqueeze(0) & (pool_class.unsqueeze(0) != arange.unsqueeze(1))  # (C, P)
    # Uniform draws with replacement among the allowed entries of each row: a uniform rank, located by
    # searchsorted on the running count (no host sync, unlike a data-dependent nonzero).
    cum = allowed.long().cumsum(1)
    total = cum[:, -1:]
    has_neg = total.squeeze(1) > 0
    u = torch.rand(c, q_num * num_negatives, generator=generator, device=query.device)
    rank = (u * total).long().minimum(total - 1) + 1
    neg_idx = torch.searchsorted(cum, rank).clamp_max(pool.shape[0] - 1)
    # Similarities to the whole pool (C*Q*P floats) cost far less than gathering C*Q*N key vectors.
    sim = torch.einsum("cqd,pd->cqp", query, pool)
    negatives = sim.gather(2, neg_idx.view(c, q_num, num_negatives))
    pos_sim = (query * positive.unsqueeze(1)).sum(-1, keepdim=True)
    logits = torch.cat([pos_sim, negatives], dim=-1) / tau
    per_query = logits.logsumexp(-1) - logits[..., 0]
    per_class = (per_query * okf).sum(1) / count.clamp_min(1.0)
    use = ((count > 0) & has_neg).to(per_class.dtype)
    return (per_class * use).sum() / use.sum().clamp_min(1.0)


class PixelContrastiveLoss(nn.Module):
    """L_contrast with sampler-drawn queries and a per-class device memory bank.

    Args:
        num_classes: C (background included; background is contrasted like any class).
        dim: representation width.
        strategy: ``"ns"``, ``"sg"`` or ``"sag"`` (any strategy :mod:`arco.sampling` knows).
        grid: sampler grid (cells per spatial axis).
        num_queries: draws per class (paper: 256).
        num_negatives: negatives per query (paper: 512).
        tau: temperature (paper: 0.5).
        bank_size: keys kept per class.

    ``forward(label, valid, rep_student, rep_teacher, generator=None)``:
        label ``(B, *S)`` int64 (GT on labeled, pseudo-labels on unlabeled images), valid ``(B, *S)`` bool or
        None (labeled or confident pixels), ``rep_student(index) -> (N, dim)`` with grad and
        ``rep_teacher(index)`` (called under ``no_grad``) map flat positions into ``(B, *S)`` to
        representations. Each is called once, on all ``C * num_queries`` draws. The teacher keys are stored
        for :meth:`enqueue`. ``generator`` (on the label's device) drives the sampler and the negative draws.

    ``enqueue()`` (after the optimiser step) writes this step's valid teacher keys of each class into that
    class's ring buffer (at most ``min(num_queries, bank_size)`` per class; a class absent this step keeps its
    old keys). Static shapes, no host sync.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        strategy: str = "sg",
        grid: int | tuple[int, ...] = 4,
        num_queries: int = 256,
        num_negatives: int = 512,
        tau: float = 0.5,
        bank_size: int = 2048,
    ) -> None:
        super().__init__()
        if min(num_classes, dim, num_queries, num_negatives, bank_size) < 1 or tau <= 0:
            raise ValueError(
                "PixelContrastiveLoss: num_classes, dim, num_queries, num_negatives, bank_size must be >= 1 "
                f"and tau > 0, got {num_classes}, {dim}, {num_queries}, {num_negatives}, {bank_size}, "
                f"tau={tau}"
            )
        self.num_classes, self.dim, self.strategy, self.grid = num_classes, dim, strategy, grid
        self.num_queries, self.num_negatives, self.tau, self.bank_size = (
            num_queries,
            num_negatives,
            tau,
            bank_size,
        )
        # One extra "trash" slot per class absorbs the writes of invalid keys, keeping enqueue free of host
        # syncs.
        self.register_buffer("bank", torch.zeros(num_classes, bank_size + 1, dim))
        self.register_buffer("bank_valid", torch.zeros(num_classes, bank_size + 1, dtype=torch.bool))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(
        self,
        label: torch.Tensor,
        valid: torch.Tensor | None,
        rep_student: RepFn,
        rep_teacher: RepFn,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if label.dtype != torch.long or label.dim() not in (3, 4):
            raise ValueError(
                f"PixelContrastiveLoss: label must be int64 (B, H, W) or (B, D, H, W), got {label.dtype} "
                f"of shape {tuple(label.shape)}"
            )
        if valid is not None and (valid.dtype != torch.bool or valid.shape != label.shape):
            raise ValueError(
                f"PixelContrastiveLoss: valid must be bool of shape {tuple(label.shape)}, got {valid.dtype} "
                f"of shape {tuple(valid.shape)}"
            )
        c, q_num = self.num_classes, self.num_queries
        index, ok = sampling.sample_per_class(
            label, c, q_num, self.strategy, grid=self.grid, valid=valid, generator=generator
        )
        flat = index.reshape(-1)
        query = F.normalize(rep_student(flat).float(), dim=-1).view(c, q_num, -1)
        with torch.no_grad():
            key = F.normalize(rep_teacher(flat).float(), dim=-1).view(c, q_num, -1)
        if query.shape[-1] != self.dim:
            raise ValueError(f"PixelContrastiveLoss: representations have {query.shape[-1]} channels, dim={self.dim}")
        self._pending = (key, ok)
        bs = self.bank_size
        return pixel_contrastive_loss(
            query,
            key,
            ok,
            self.bank[:, :bs],
            self.bank_valid[:, :bs],
            self.num_negatives,
            self.tau,
            generator,
        )

    @torch.no_grad()
    def enqueue(self) -> None:
        """Push the teacher keys stored by the last ``forward`` into the bank (no-op if there are none)."""
        if self._pending is None:
            return
        key, ok = self._pending
        self._pending = None
        # DDP: push the keys of every rank, in rank order (C, ranks * Q), so every rank holds the same bank.
        key, ok = gather_cat(key, dim=1), gather_cat(ok, dim=1)
        m = min(key.shape[1], self.bank_size)
        key, ok = key[:, :m], ok[:, :m]
        rank = ok.long().cumsum(1) - 1
        slot = torch.where(ok, (self.ptr.unsqueeze(1) + rank) % self.bank_size, self.bank_size)
        self.bank.scatter_(1, slot.unsqueeze(-1).expand(-1, -1, self.dim), key.to(self.bank.dtype))
        self.bank_valid.scatter_(1, slot, ok)
        self.bank_valid[:, self.bank_size] = False
        self.ptr.copy_((self.ptr + ok.sum(1)) % self.bank_size)
