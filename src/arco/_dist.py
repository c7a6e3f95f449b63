"""Where this process stands in a ``torch.distributed`` run, and the one collective the loss modules need.

Everything here is a no-op in a single process (no initialised process group), so library code calls it
unconditionally. Memory banks and queues use :func:`gather_cat` in their ``enqueue``: the rows of every rank are
concatenated in rank order, so every rank pushes the same rows and holds the same bank, and, since rank ``r``
trains on slice ``r`` of the global batch, the rows arrive in the order a single process with the whole global
batch would push them. Stdlib + torch only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["gather_cat", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes of the run (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def gather_cat(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``torch.cat`` of ``tensor`` from every rank in rank order along ``dim`` (``tensor`` itself in one process).

    Every rank must pass a tensor of the same shape and dtype (static shapes: pad with validity flags rather than
    dropping rows). Bool tensors travel as uint8 (not every backend reduces bool). No host synchronisation.
    """
    if not is_distributed():
        return tensor
    send = tensor.detach().contiguous()
    is_bool = send.dtype == torch.bool
    if is_bool:
        send = send.to(torch.uint8)
    parts = [torch.empty_like(send) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, send)
    out = torch.cat(parts, dim=dim)
    return out.bool() if is_bool else out
