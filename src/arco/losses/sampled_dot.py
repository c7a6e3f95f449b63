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

__all__ = ["sampled_dot", "masked_count"]

# Non-CPU forward: gather at most this many key elements at a time (64 MB in float32).
_CHUNK_ELEMENTS = 1 << 24
# CPU: (row, query) pair keys are sorted as int32 below this bound (int64 above): several times faster.
_INT32_KEYS_BELOW = 2**31
# CPU backward: table rows per block, so that one block (16 MB) stays in the last-level cache.
_BLOCK_BYTES = 1 << 24


def sampled_dot(
    query: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(M, N)``: ``query[m] . table[rows[m, n]]``; differentiable w.r.t. ``query`` only.

    Args:
        query: ``(M, dim)`` floating.
        table: ``(R, dim)`` of the same dtype and device, rows contiguous (a view into a larger buffer is fine);
            treated as a constant (no gradient).
        rows: ``(M, N)`` int64 in ``[0, R)`` (repeats allowed).
        mask: optional ``(M, N)`` bool: where False the output is 0 and gets no gradient; on CPU those draws
            cost nothing (on other devices they are computed and zeroed: static shapes).
    """
    if mask is None:
        mask = torch.ones_like(rows, dtype=torch.bool)
    return _SampledDot.apply(query, table, rows, mask)


def masked_count(mask: torch.Tensor) -> int:
    """Draws :func:`sampled_dot` computes under ``mask``: the True ones on CPU, all of them elsewhere (reading
    the count back from a device would synchronise it)."""
    return int(mask.sum()) if _use_pairs(mask) else mask.numel()


class _SampledDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor):
        if not _use_pairs(query):
            ctx.save_for_backward(table, rows, mask)
            ctx.plan = None
            return _forward_chunked(query, table, rows).masked_fill_(~mask, 0)
        plan = _pairs(rows, mask, table.shape[0])
        ctx.save_for_backward(table, *plan)
        ctx.plan = rows.shape
        return _forward_csr(query, table, rows.shape, *plan)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        table, *saved = ctx.saved_tensors
        weights = grad.to(table.dtype)
        if ctx.plan is None:
            rows, mask = saved
            weights = weights.masked_fill(~mask, 0).contiguous()
            return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum"), None, None, None
        return _backward_blocked(weights, table, ctx.plan[0], *saved), None, None, None


def _use_pairs(t: torch.Tensor) -> bool:
    """The distinct-pair CSR path needs data-dependent sizes: free on CPU, a host sync on a device."""
    return t.device.type == "cpu"


def _pairs(rows: torch.Tensor, mask: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, ...]:
    """Distinct (row, query) pairs of the unmasked draws, sorted by row then query.

    Returns ``where`` (flat output position of each unmasked draw, in sorted order), ``which`` (the pair of each
    of them), and the pairs' ``row`` and ``query`` (int32 or int64, as the keys).
    """
    m, n = rows.shape
    itype = torch.int32 if max(num_rows * m, rows.numel()) < _INT32_KEYS_BELOW else torch.long
    position = mask.reshape(-1).nonzero().squeeze(1)  # data-dependent size: fine on CPU
    pair, order = (rows.reshape(-1)[position].to(itype) * m + (position // n).to(itype)).sort()
    first = torch.ones_like(pair, dtype=torch.bool)
    first[1:] = pair[1:] != pair[:-1]
    unique = pair[first]
    return position[order], first.cumsum(0) - 1, unique // m, unique % m


def _forward_csr(
    query: torch.Tensor,
    table: torch.Tensor,
    shape: torch.Size,
    where: torch.Tensor,
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
    out = query.new_zeros(shape.numel())
    out[where] = values[which]
    return out.view(shape)


def _backward_blocked(
    weights: torch.Tensor,
    table: torch.Tensor,
    m: int,
    where: torch.Tensor,
    which: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
) -> torch.Tensor:
    """``grad_q[m] = sum over m's draws of weight * table[row]``, as bag sums per (block of rows, query)."""
    dim = table.shape[1]
    block = max(1, _BLOCK_BYTES // (dim * table.element_size()))
    blocks = -(-table.shape[0] // block)
    pair_weight = weights.new_zeros(row.shape).index_add_(0, which, weights.reshape(-1)[where])
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
