"""Dot products of queries with drawn rows of a key table, without materialising the drawn rows.

``sampled_dot(query, table, rows)[m, n] = query[m] . table[rows[m, n]]`` is what a contrastive loss with drawn
negatives needs: ``M * N`` scalars. Gathering ``table[rows]`` first would write ``M * N * dim`` floats (1 GB for
the paper's 4 x 256 queries x 512 negatives x 512 channels); a dense ``query @ table.T`` costs ``M * R * dim``
multiply-adds for a table of R rows.

CPU (where data-dependent sizes cost nothing: there is no device to synchronise with): the draws are reduced to
their distinct ``(row, query)`` pairs, sorted by row. Forward: one sampled dense-dense matmul
(``torch.sparse.sampled_addmm``) on that valid CSR pattern (rows sorted, columns sorted and distinct), which
reads every table row once, in order. Backward (to ``query``; the table is a constant):
``grad_q[m] = sum_n grad[m, n] table[rows[m, n]]``, a weighted bag sum (``F.embedding_bag``) per block of
``_BLOCK_BYTES`` of table rows, so each block is read from memory once rather than once per draw.

Other devices (CUDA): gathers of at most ``_CHUNK_ELEMENTS`` key elements and a batched matrix-vector product
per chunk, and one weighted bag sum for the gradient (static shapes, no host sync).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = ["sampled_dot"]

# Non-CPU forward: gather at most this many key elements at a time (64 MB in float32).
_CHUNK_ELEMENTS = 1 << 24
# CPU: (row, query) pair keys are sorted as int32 below this bound (int64 above): several times faster.
_INT32_KEYS_BELOW = 2**31
# CPU backward: table rows per block, so that one block (16 MB) stays in the last-level cache.
_BLOCK_BYTES = 1 << 24


def sampled_dot(query: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``(M, N)``: ``query[m] . table[rows[m, n]]``; differentiable w.r.t. ``query`` only.

    Args:
        query: ``(M, dim)`` floating.
        table: ``(R, dim)`` of the same dtype and device, rows contiguous (a view into a larger buffer is fine);
            treated as a constant (no gradient).
        rows: ``(M, N)`` int64 in ``[0, R)`` (repeats allowed).
    """
    return _SampledDot.apply(query, table, rows)


class _SampledDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if not _use_pairs(query) or rows.numel() == 0:
            ctx.save_for_backward(table, rows)
            ctx.plan = None
            return _forward_chunked(query, table, rows)
        plan = _pairs(rows, table.shape[0])
        ctx.save_for_backward(table, *plan)
        ctx.plan = True
        return _forward_csr(query, table, *plan)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        table, *saved = ctx.saved_tensors
        weights = grad.to(table.dtype).contiguous()
        if ctx.plan is None:
            return F.embedding_bag(saved[0], table, per_sample_weights=weights, mode="sum"), None, None
        return _backward_blocked(weights, table, *saved), None, None


def _use_pairs(query: torch.Tensor) -> bool:
    """The distinct-pair CSR path needs data-dependent sizes: free on CPU, a host sync on a device."""
    return query.device.type == "cpu"


def _pairs(rows: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, ...]:
    """Distinct (row, query) pairs of the draws, sorted by row then query.

    Returns ``order`` (draw positions in sorted order), ``which`` (the pair of each sorted draw), and the
    pairs' ``row`` and ``query`` (int32 or int64, as the keys).
    """
    m, n = rows.shape
    itype = torch.int32 if max(num_rows * m, rows.numel()) < _INT32_KEYS_BELOW else torch.long
    qid = torch.arange(m, device=rows.device, dtype=itype).repeat_interleave(n)
    pair, order = (rows.reshape(-1).to(itype) * m + qid).sort()
    first = torch.ones_like(pair, dtype=torch.bool)
    first[1:] = pair[1:] != pair[:-1]
    which = first.cumsum(0) - 1
    unique = pair[first]  # data-dependent size: fine on CPU
    return order, which, unique // m, unique % m


def _forward_csr(
    query: torch.Tensor,
    table: torch.Tensor,
    order: torch.Tensor,
    which: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
) -> torch.Tensor:
    """One sampled matmul on the (R, M) CSR pattern of the distinct pairs; repeated draws share a value."""
    m = query.shape[0]
    per_row = torch.zeros(table.shape[0] + 1, dtype=row.dtype, device=row.device)
    per_row.scatter_add_(0, row.long() + 1, torch.ones_like(row))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        pattern = torch.sparse_csr_tensor(
            per_row.cumsum(0, dtype=row.dtype), col, query.new_zeros(col.shape), size=(table.shape[0], m)
        )
        values = torch.sparse.sampled_addmm(pattern, table, query.T, beta=0.0).values()
    out = query.new_empty(order.shape)
    out[order] = values[which]
    return out.view(m, -1)


def _backward_blocked(
    weights: torch.Tensor,
    table: torch.Tensor,
    order: torch.Tensor,
    which: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
) -> torch.Tensor:
    """``grad_q[m] = sum over m's draws of weight * table[row]``, as bag sums per (block of rows, query)."""
    m, dim = weights.shape[0], table.shape[1]
    block = max(1, _BLOCK_BYTES // (dim * table.element_size()))
    blocks = -(-table.shape[0] // block)
    pair_weight = weights.new_zeros(row.shape).index_add_(0, which, weights.reshape(-1)[order])
    bag, by_bag = (row // block * m + col).sort()  # < blocks * m bags: the keys' integer type suffices
    offsets = torch.zeros(blocks * m + 1, dtype=torch.long, device=row.device)
    offsets.scatter_add_(0, bag.long() + 1, torch.ones_like(bag, dtype=torch.long))
    sums = F.embedding_bag(
        row[by_bag].long(),
        table,
        offsets.cumsum(0),
        per_sample_weights=pair_weight[by_bag],
        mode="sum",
        include_last_offset=True,
    )
    return sums.view(blocks, m, dim).sum(0)


def _forward_chunked(query: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Any device: gather a bounded chunk of drawn rows, one batched matrix-vector product per chunk."""
    m, n = rows.shape
    dim = query.shape[1]
    step = max(1, _CHUNK_ELEMENTS // max(1, n * dim))
    parts = [query.new_zeros(0, n)]
    for start in range(0, m, step):  # a static handful of chunks, not a loop over queries
        keys = table.index_select(0, rows[start : start + step].reshape(-1)).view(-1, n, dim)
        parts.append(torch.bmm(keys, query[start : start + step].unsqueeze(-1)).squeeze(-1))
    return torch.cat(parts)
