"""BatchNorm helper: a context that keeps a forward pass from moving the running statistics evaluation uses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["frozen_bn_stats"]


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
