"""Shared pieces of the baseline-method tests: a stub backbone with hand-computable outputs and independent reference
losses (the method builder, the CLI smoke run and the resume check are in ``_tiny`` / ``_cli_runs``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from _tiny import build
from arco.methods import Batch
from arco.models import SegOutput

NUM_CLASSES = 3


class Stub(nn.Module):
    """A fixed 'network' whose logits are known in closed form: ``logits_c = w_c·x + b_c`` per pixel (``x`` the
    image's first channel). ``encode`` returns ``[x]``, ``decode`` applies the map; every input is recorded."""

    def __init__(self, w: list[float], b: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(b))
        self.inputs: list[torch.Tensor] = []

    def closed_form(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return self.w.detach().view(shape) * x[:, :1] + self.b.detach().view(shape)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.inputs.append(x.detach().clone())
        return [x]

    def decode(self, maps: list[torch.Tensor]) -> SegOutput:
        x = maps[-1]
        shape = (1, -1, *([1] * (x.dim() - 2)))
        logits = self.w.view(shape) * x[:, :1] + self.b.view(shape)
        return SegOutput(logits, [x], x)

    def forward(self, x: torch.Tensor) -> SegOutput:
        return self.decode(self.encode(x))


STUDENT = ([1.5, -1.0, 0.5], [0.0, 0.3, -0.2])
TEACHER = ([-0.8, 2.0, 1.0], [0.1, -0.4, 0.2])


def install(method, name: str, module: nn.Module) -> nn.Module:
    """Replace the method's component ``name`` (what ``method.<name>`` returns too) by ``module``."""
    method._components[name] = module
    method._calls[name] = module
    if name in dict(method.ema_pairs):
        module.requires_grad_(False).eval()
    return module


def stubbed(name: str, spatial_dims: int = 2, teacher: bool = True, **params):
    m = build(name, spatial_dims, **params)
    s = install(m, "student", Stub(*STUDENT))
    t = install(m, "teacher", Stub(*TEACHER)) if teacher else None
    return m, s, t


def batch(spatial_dims: int = 2, bl: int = 2, bu: int = 2, seed: int = 1, size: int = 8) -> Batch:
    g = torch.Generator().manual_seed(seed)
    s = (size,) * spatial_dims
    return Batch(
        torch.randn(bl, 1, *s, generator=g),
        torch.randint(0, NUM_CLASSES, (bl, *s), generator=g),
        torch.randn(bu, 1, *s, generator=g),
    )


# ----------------------------------------------------------------------------------- reference formulas
def ref_dice(logits: torch.Tensor, label: torch.Tensor, keep: torch.Tensor | None = None, eps: float = 1e-5):
    """``mean_c 1 - (2 Σ p_c y_c + eps) / (Σ p_c² + Σ y_c + eps)`` over the (kept) pixels, a loop over classes."""
    p = logits.double().softmax(1)
    keep = torch.ones_like(label, dtype=torch.bool) if keep is None else keep
    losses = []
    for c in range(logits.shape[1]):
        pc, yc = p[:, c][keep], (label == c)[keep].double()
        losses.append(1 - (2 * (pc * yc).sum() + eps) / ((pc * pc).sum() + yc.sum() + eps))
    return torch.stack(losses).mean()


def ref_sup(logits: torch.Tensor, label: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    return weight * (F.cross_entropy(logits.double(), label) + ref_dice(logits, label))


def sigmoid_ramp(step: int, length: float) -> float:
    return math.exp(-5 * (1 - min(step / length, 1.0)) ** 2)
