"""Dot products of queries with drawn rows of a key table, without materialising the drawn rows.

``sampled_dot(query, table, rows)[m, n] = query[m] . table[rows[m, n]]`` is what a contrastive loss with drawn
negatives needs: ``M * N`` scalars. Gathering ``table[rows]`` first would write ``M * N * dim`` floats (1 GB for
the paper's 4 x 256 queries x 512 negatives x 512 channels); a dense ``query @ table.T`` costs ``M * R * dim``
multiply-adds for a table of R rows. Here:

- forward on CPU: one sampled dense-dense matmul (``torch.sparse.sampled_addmm``) over the distinct
  ``(row, query)`` pairs, laid out as a valid CSR pattern (rows sorted, columns sorted and distinct), so every
  table row is read once and in order; repeated draws take the value of their pair. CPU tensors may have
  data-dependent sizes without a cost (there is no device to synchronise with).
- forward elsewhere (CUDA): gathers of at most ``_CHUNK_ELEMENTS`` key elements and a batched matrix-vector
  product per chunk (static shapes, no host sync).
- backward (query only; the table is a constant): ``grad_q[m] = sum_n grad[m, n] table[rows[m, n]]``, a
  weighted bag sum (``F.embedding_bag``), again without the gather.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = ["sampled_dot"]

# Non-CPU forward: gather at most this many key elements at a time (64 MB in float32).
_CHUNK_ELEMENTS = 1 << 24


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
        ctx.save_for_backward(table, rows)
        if query.device.type == "cpu":
            return _forward_csr(query, table, rows)
        return _forward_chunked(query, table, rows)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        table, rows = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        weights = grad.to(table.dtype).contiguous()
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum"), None, None


def _forward_csr(query: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """CPU forward: distinct (row, query) pairs as a valid CSR pattern of shape (R, M), one sampled matmul."""
    m, n = rows.shape
    if rows.numel() == 0:
        return query.new_zeros(m, n)
    pair = rows.reshape(-1) * m + torch.arange(m, device=rows.device).repeat_interleave(n)
    pair, order = pair.sort()
    first = torch.ones_like(pair, dtype=torch.bool)
    first[1:] = pair[1:] != pair[:-1]
    which = first.cumsum(0) - 1  # distinct pair of each sorted draw
    unique = pair[first]  # data-dependent size: fine on CPU
    per_row = torch.zeros(table.shape[0] + 1, dtype=torch.long, device=rows.device)
    per_row.scatter_add_(0, unique // m + 1, torch.ones_like(unique))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        pattern = torch.sparse_csr_tensor(
            per_row.cumsum(0), unique % m, query.new_zeros(unique.shape), size=(table.shape[0], m)
        )
        values = torch.sparse.sampled_addmm(pattern, table, query.T, beta=0.0).values()
    out = query.new_empty(m * n)
    out[order] = values[which]
    return out.view(m, n)


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
