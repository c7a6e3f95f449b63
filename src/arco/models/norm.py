"""BatchNorm helpers: a validity-masked BatchNorm (placeholder rows must not shape the statistics) and a context
that keeps a forward pass from moving the running statistics evaluation uses.

The representation head is evaluated at a static ``C * num_queries`` sampler draws; slots of a class with fewer
candidates than queries (or absent) hold an arbitrary index. :class:`MaskedBatchNorm1d` takes a ``valid`` row
mask so those rows contribute nothing to the batch statistics, to the running statistics, or (through the EMA)
to the teacher, with static shapes and no host synchronisation (no ``nonzero``/compaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["MaskedBatchNorm1d", "frozen_bn_stats"]


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on ``(N, C)`` inputs with an optional bool ``valid`` row mask.

    In training mode (or without running statistics) the batch mean and biased variance are weighted means over
    the valid rows only; every row, valid or not, is normalised with them. Running statistics move by the usual
    momentum towards the valid rows' mean and *unbiased* variance, and only when at least two rows are valid
    (``num_batches_tracked`` counts these updates). With fewer valid rows nothing changes and no NaN appears (a
    single valid row normalises to ``bias``). In eval mode, or with ``valid=None``, it is exactly
    ``nn.BatchNorm1d``. Same parameters, buffers and ``state_dict`` keys as ``nn.BatchNorm1d``.

    Example:
        >>> bn = MaskedBatchNorm1d(3)
        >>> out = bn(torch.randn(5, 3), torch.tensor([True, True, True, False, False]))
        >>> out.shape
        torch.Size([5, 3])
    """

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        use_batch = self.training or self.running_mean is None
        if valid is None or not use_batch:
            return super().forward(x)
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"MaskedBatchNorm1d: input must be (N, {self.num_features}) when valid is given, "
                f"got shape {tuple(x.shape)}"
            )
        if valid.dtype != torch.bool or valid.shape != x.shape[:1]:
            raise ValueError(
                f"MaskedBatchNorm1d: valid must be a bool tensor of shape ({x.shape[0]},), got {valid.dtype} "
                f"of shape {tuple(valid.shape)}"
            )
        # Statistics in float32 (at least) even under autocast: a bf16 sum over thousands of rows is coarse.
        dtype = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(dtype)
        w = valid.to(dtype)
        n = w.sum()
        mean = (w @ xf) / n.clamp_min(1.0)
        centered = xf - mean
        var = (w @ centered.square()) / n.clamp_min(1.0)
        y = centered * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        if self.training and self.track_running_stats and self.running_mean is not None:
            self._update_running(mean.detach(), var.detach(), n)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """Momentum update towards the valid rows' statistics; a no-op (factor 0) when fewer than 2 are valid."""
        update = n >= 2
        self.num_batches_tracked.add_(update.long())
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm1d
            factor = torch.where(update, 1.0 / self.num_batches_tracked.clamp_min(1).to(mean.dtype), 0.0)
        else:  # Python scalars: a tensor built from the host value would be a blocking copy on CUDA
            factor = torch.where(update, self.momentum, 0.0).to(mean.dtype)
        unbiased = var * (n / (n - 1).clamp_min(1.0))
        for buf, stat in ((self.running_mean, mean), (self.running_var, unbiased)):
            buf.copy_(buf * (1 - factor).to(buf.dtype) + (factor * stat).to(buf.dtype))


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block, BatchNorm layers of ``module`` still normalise with the batch's statistics in training
    mode but do not update their running mean/variance (momentum 0): a strongly augmented batch then shapes the
    gradient, not the statistics the network is evaluated with. ``num_batches_tracked`` is restored too."""
    saved = []
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            saved.append((m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
