"""Helpers of the multi-decoder / multi-network method tests (CCT, URPC, MC-Net, SS-Net, DCT, CPS): an independent
Dice, output capture and gradient comparison (the CLI smoke run: ``_cli_runs``; the resume check: ``_tiny``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dice_ref(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """SSL4MIS's DiceLoss written as its per-class loop: mean_c 1 - (2 I + 1e-5) / (sum p^2 + sum y^2 + 1e-5)."""
    p = logits.float().softmax(1)
    terms = []
    for c in range(logits.shape[1]):
        y = (label == c).float()
        inter = (p[:, c] * y).sum()
        terms.append(1 - (2 * inter + 1e-5) / ((p[:, c] ** 2).sum() + (y**2).sum() + 1e-5))
    return torch.stack(terms).mean()


def sup_ref(logits: torch.Tensor, label: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    return weight * (F.cross_entropy(logits.float(), label) + dice_ref(logits, label))


def sigmoid_ramp(step: int, total: int, fraction: float) -> float:
    t = min(max(step / (fraction * total), 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class Capture:
    """Record every output (in the graph) of ``module`` (or of one of its methods) during a training step."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.outputs: list = []
        self.inputs: list = []
        module.register_forward_hook(self._hook)

    def _hook(self, _m, args, out) -> None:
        self.inputs.append(args[0] if args else None)
        self.outputs.append(out)


def assert_same_gradients(a: torch.Tensor, b: torch.Tensor, params: list[torch.Tensor], atol: float = 1e-6) -> None:
    """``a`` and ``b`` have equal gradients w.r.t. every parameter: same value *and* same stop-gradients."""
    ga = torch.autograd.grad(a, params, retain_graph=True, allow_unused=True)
    gb = torch.autograd.grad(b, params, retain_graph=True, allow_unused=True)
    for i, (x, y) in enumerate(zip(ga, gb)):
        x = torch.zeros_like(params[i]) if x is None else x
        y = torch.zeros_like(params[i]) if y is None else y
        assert torch.allclose(x, y, atol=atol, rtol=1e-4), f"parameter {i} {tuple(params[i].shape)}: gradients differ"
