"""Mean-teacher helpers: build a frozen teacher and update it as an EMA of the student (docs/design.md)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["make_teacher", "ema_update"]


def make_teacher(student: nn.Module) -> nn.Module:
    """Deep copy of ``student`` with ``requires_grad=False`` everywhere, in eval mode.

    Eval mode matters: the teacher predicts pseudo-labels with dropout off and BN running statistics (the
    reference code leaves it in train mode). Calling ``.train()`` on a parent module switches it back; call
    ``.eval()`` again.
    """
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float = 0.99) -> None:
    """In place ``t <- momentum * t + (1 - momentum) * s`` for every parameter and floating-point buffer.

    Integer buffers (BatchNorm ``num_batches_tracked``) are copied. Both modules must have the same structure.

    Raises:
        ValueError: ``momentum`` outside ``[0, 1]`` or the two modules do not match.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update: momentum must be in [0, 1], got {momentum}")
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    t_bufs, s_bufs = list(teacher.buffers()), list(student.buffers())
    if len(t_params) != len(s_params) or len(t_bufs) != len(s_bufs):
        raise ValueError("ema_update: teacher and student have different parameters/buffers")
    t_float = t_params + [b for b in t_bufs if b.is_floating_point()]
    s_float = s_params + [b for b, t in zip(s_bufs, t_bufs) if t.is_floating_point()]
    if t_float:
        torch._foreach_lerp_(t_float, s_float, 1.0 - momentum)
    for t, s in zip(t_bufs, s_bufs):
        if not t.is_floating_point():
            t.copy_(s)
