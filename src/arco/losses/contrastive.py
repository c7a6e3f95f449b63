"""arco 0.1's stage-2 pixel contrastive loss (``finetune.contrast: batch``; the reference code's loss is
:mod:`arco.losses.hard_negative`).

For every class c present in the batch, ``num_queries`` pixels of class c are drawn with the chosen sampler
(NS/SG/SAG, :func:`arco.sampling.sample_per_class`). Queries are the student representations at those pixels;
the positive key is the mean teacher representation of class c over the same draws (the sampler's estimate of
the class mean, detached); the negatives are ``num_negatives`` teacher keys per query drawn uniformly among
the sampled keys of the other classes in this batch and the per-class memory bank. logits = cosine / tau;
cross-entropy with the positive as target, averaged over the valid queries of a class, then over the classes
that are present and have negatives. Classes are always addressed by their label value, so an absent class
never shifts the others (the reference code's bug); absent classes contribute nothing.

Cost: the negatives of C classes x Q queries x N draws come from a pool of ``P = C*Q + C*K`` keys (K = bank
size per class). Similarities to the whole pool cost ``C*Q*P*dim`` multiply-adds (63 G at the paper's K = 30 000,
dim 512); gathering the drawn keys would materialise ``(C, Q, N, dim)`` floats (1 GB). The "sampled" form
computes just the drawn dot products (:func:`arco.losses.sampled_dot.sampled_dot`: a sampled matmul over the
distinct drawn pairs on CPU, chunked gathers elsewhere; gradient by weighted bag sums). "auto" chooses per key
table (this step's keys, the bank) by the number of products each form computes (``SAMPLED_ABOVE``). The bank
is read in place, never concatenated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from arco import sampling
from arco._checks import choice
from arco._dist import gather_cat
from arco.losses.sampled_dot import masked_count, sampled_dot

__all__ = ["PixelContrastiveLoss", "pixel_contrastive_loss", "FORMS", "SAMPLED_ABOVE"]

# rep_fn(index) -> (N, dim): representations at flat positions ``index``.
RepFn = Callable[[torch.Tensor], torch.Tensor]

# How the query-negative similarities are computed; both forms are exact and give the same draws.
FORMS = ("auto", "dense", "sampled")
# "auto" computes a key table's similarities at the draws only ("sampled") when the dense product (table rows
# x queries) has more than this many times as many entries as the draws landing in that table; otherwise one
# dense matmul and a gather is cheaper. Crossover measured at 4 x 256 queries, 512 negatives, dim 512, on
# CPU (benchmarks/bench_contrastive.py --crossover): about 6 table rows per negative with 1 thread.
SAMPLED_ABOVE = 8


def pixel_contrastive_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    ok: torch.Tensor,
    bank: torch.Tensor,
    bank_valid: torch.Tensor,
    num_negatives: int = 512,
    tau: float = 0.5,
    generator: torch.Generator | None = None,
    form: str = "auto",
) -> torch.Tensor:
    """InfoNCE of per-class queries against the class-mean positive and sampled negatives (eq. E.2/E.3).

    Args:
        query: ``(C, Q, dim)`` unit-norm student representations, row c holding class-c draws (with grad).
        key: ``(C, Q, dim)`` unit-norm teacher representations at the same pixels (treated as constant).
        ok: ``(C, Q)`` bool, which draws are real.
        bank: ``(C, K, dim)`` unit-norm teacher keys of earlier steps, row c of class c (constant; a view into
            a larger buffer is read in place). bank_valid: ``(C, K)`` bool.
        num_negatives: negatives per query, drawn with replacement from the other classes' valid keys.
        tau: temperature.
        generator: for the negative draws (on the tensors' device).
        form: ``"dense"`` computes each query's similarity to every key and gathers the drawn ones;
            ``"sampled"`` computes only the drawn ``C * Q * num_negatives`` dot products (never materialising
            the ``(C, Q, N, dim)`` keys); ``"auto"`` picks the cheaper per key table (current keys, bank).
            Same draws, same loss and gradient up to float rounding.

    Returns:
        Scalar, float32 at least (bf16/fp16 inputs are computed in float32, also under autocast); 0 attached
        to ``query``'s graph when no class has both queries and negatives.
    """
    form = choice("form", form, FORMS, "pixel_contrastive_loss()")
    dtype = torch.promote_types(query.dtype, torch.float32)
    with torch.autocast(query.device.type, enabled=False):
        query = query.to(dtype)
        key, bank = key.detach().to(dtype), bank.detach().to(dtype)
        positive = F.normalize(torch.where(ok.unsqueeze(-1), key, 0).sum(1), dim=-1)  # (C, dim)
        neg_idx, has_neg = _draw_negatives(ok, bank_valid, num_negatives, generator)
        negatives = _negative_similarities(query, key, bank, neg_idx, form)
        pos_sim = (query * positive.unsqueeze(1)).sum(-1, keepdim=True)
        logits = torch.cat([pos_sim, negatives], dim=-1) / tau
        per_query = logits.logsumexp(-1) - logits[..., 0]
        count = ok.sum(1)
        per_class = torch.where(ok, per_query, 0).sum(1) / count.clamp_min(1)
        use = (count > 0) & has_neg
        return torch.where(use, per_class, 0).sum() / use.sum().clamp_min(1)


def _draw_negatives(
    ok: torch.Tensor, bank_valid: torch.Tensor, num_negatives: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform draws with replacement among the other classes' valid entries of the pool [keys; bank].

    Returns ``(C, Q, N)`` int64 positions into the virtual pool of ``C*Q + C*K`` rows (the keys flattened, then
    the bank flattened) and ``(C,)`` bool, whether class c has any negative. Draw ``i`` of class c is the
    ``r``-th (ascending) allowed position with ``r = min(floor(u_i * |allowed_c|), |allowed_c| - 1)``. The
    valid positions are listed once by a scatter (static shape, no host sync, unlike ``nonzero``); class c's
    own valid entries are two runs of that list (its keys, its bank), which ``r`` skips arithmetically.
    """
    c, q_num = ok.shape
    device = ok.device
    pool_ok = torch.cat([ok.reshape(-1), bank_valid.reshape(-1)])
    p = pool_ok.numel()
    rank_of = torch.where(pool_ok, pool_ok.long().cumsum(0) - 1, p)  # invalid entries go to a trash slot
    valid_pos = torch.zeros(p + 1, dtype=torch.long, device=device)
    valid_pos.scatter_(0, rank_of, torch.arange(p, device=device))
    n_key, n_bank = ok.sum(1, keepdim=True), bank_valid.sum(1, keepdim=True)  # (C, 1)
    key_start = n_key.cumsum(0) - n_key  # where class c's valid keys sit in the list of valid entries
    bank_start = n_key.sum() + n_bank.cumsum(0) - n_bank
    total = n_key.sum() + n_bank.sum() - n_key - n_bank  # (C, 1) allowed entries per class
    u = torch.rand(c, q_num * num_negatives, generator=generator, device=device)
    rank = (u * total).long().minimum(total - 1).clamp_min(0)
    rank = rank + torch.where(rank >= key_start, n_key, 0)
    rank = rank + torch.where(rank >= bank_start, n_bank, 0)
    neg_idx = valid_pos[rank.clamp_max(p - 1)]
    return neg_idx.view(c, q_num, num_negatives), total.squeeze(1) > 0


def _negative_similarities(
    query: torch.Tensor, key: torch.Tensor, bank: torch.Tensor, neg_idx: torch.Tensor, form: str
) -> torch.Tensor:
    """``(C, Q, N)`` cosine of each query with its drawn negatives, the key and bank tables handled apart.

    Splitting the virtual pool into its two tables avoids concatenating (copying) the bank every step; each
    table is read densely or at the draws only (``form``), and the draws pick from the right one.
    """
    c, q_num, dim = query.shape
    n = neg_idx.shape[-1]
    m = c * q_num
    flat_q = query.reshape(m, dim)
    idx = neg_idx.view(m, n)
    from_key = idx < m
    sim = _table_similarities(flat_q, key.reshape(m, dim), idx.clamp_max(m - 1), from_key, form)
    k = bank.shape[1]
    if k > 0:
        table, stride = _row_table(bank)
        j = (idx - m).clamp_min(0)
        from_bank = _table_similarities(flat_q, table, (j // k) * stride + j % k, ~from_key, form)
        sim = torch.where(from_key, sim, from_bank)
    return sim.view(c, q_num, n)


def _row_table(bank: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``bank (C, K, dim)`` as a ``(R, dim)`` row table without a copy when its classes are row blocks of one
    buffer (the module's ring buffer with its trash slot); row of ``(c, k)`` = ``c * stride + k``."""
    c, k, dim = bank.shape
    s0, s1, s2 = bank.stride()
    if s2 == 1 and s1 == dim and s0 % dim == 0 and s0 >= k * dim:
        stride = s0 // dim if c > 1 else k
        return bank.as_strided(((c - 1) * stride + k, dim), (dim, 1)), stride
    return bank.reshape(c * k, dim), k


def _table_similarities(
    query: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor, form: str
) -> torch.Tensor:
    """``(M, N)``: ``query[m] . table[rows[m, n]]`` where ``mask`` (elsewhere anything finite), either densely
    (every query against every row, then gather: ``M * R`` products) or at the draws only (the products
    :func:`masked_count` says, at several times the cost of a dense one: ``SAMPLED_ABOVE``)."""
    if form == "auto":
        dense_work = table.shape[0] * rows.shape[0]
        form = "dense" if dense_work <= SAMPLED_ABOVE * masked_count(mask) else "sampled"
    if form == "dense":
        return (query @ table.T).gather(1, rows)
    return sampled_dot(query, table, rows, mask)


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
        form: how query-negative similarities are computed (:data:`FORMS`, see :func:`pixel_contrastive_loss`).

    ``forward(label, valid, rep_student, rep_teacher, generator=None)``:
        label ``(B, *S)`` int64 (GT on labeled, pseudo-labels on unlabeled images), valid ``(B, *S)`` bool or
        None (labeled or confident pixels), ``rep_student(index) -> (N, dim)`` with grad and
        ``rep_teacher(index)`` (called under ``no_grad``) map flat positions into ``(B, *S)`` to
        representations. Each is called once, on all ``C * num_queries`` draws (the slots of classes with fewer
        candidates than queries hold placeholders, left out of the loss). The teacher keys are stored for
        :meth:`enqueue` (unless ``store=False``). ``generator`` (on the label's device) drives the sampler and the
        negative draws; ``strategy`` overrides the sampler for one call (diagnostics).

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
        form: str = "auto",
    ) -> None:
        super().__init__()
        if min(num_classes, dim, num_queries, num_negatives, bank_size) < 1 or tau <= 0:
            raise ValueError(
                "PixelContrastiveLoss: num_classes, dim, num_queries, num_negatives, bank_size must be >= 1 "
                f"and tau > 0, got {num_classes}, {dim}, {num_queries}, {num_negatives}, {bank_size}, "
                f"tau={tau}"
            )
        self.num_classes, self.dim, self.strategy, self.grid = num_classes, dim, strategy, grid
        self.form = choice("form", form, FORMS, "PixelContrastiveLoss")
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
        strategy: str | None = None,
        store: bool = True,
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
        strategy = self.strategy if strategy is None else strategy
        index, ok = sampling.sample_per_class(
            label, c, q_num, strategy, grid=self.grid, valid=valid, generator=generator
        )
        flat = index.reshape(-1)
        query = F.normalize(rep_student(flat).float(), dim=-1).view(c, q_num, -1)
        with torch.no_grad():
            key = F.normalize(rep_teacher(flat).float(), dim=-1).view(c, q_num, -1)
        if query.shape[-1] != self.dim:
            raise ValueError(f"PixelContrastiveLoss: representations have {query.shape[-1]} channels, dim={self.dim}")
        if store:
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
            self.form,
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
