"""SimCLR's NT-Xent on sampled pixels (``finetune.framework=simclr``).

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020,
eq. (1): for the ``2N`` L2-normalised embeddings of ``N`` positive pairs ``(z_i, z'_i)``,
``l(i, j) = -log exp(s_ij / τ) / Σ_{k != i} exp(s_ik / τ)`` and ``L = 1/(2N) Σ_i [l(i, i') + l(i', i)]``: every other
embedding of the batch, of both views, is a negative. τ = 0.1 (the paper's ImageNet setting and the official
``run.py`` default; 0.5 was its CIFAR-10 value).

Here the pairs are the student's and the EMA teacher's embeddings of one drawn pixel (module
:mod:`arco.losses.frameworks._base`); SimCLR's two branches share weights and both get gradient, here the second
branch is the constant EMA teacher (the gradient reaches the student through both halves of the sum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arco.losses.frameworks._base import FRAMEWORKS, MASKED, PixelFramework, masked_mean

__all__ = ["SimCLRLoss", "nt_xent"]

TAU = 0.1  # SimCLR run.py `temperature`


def nt_xent(query: torch.Tensor, key: torch.Tensor, ok: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """NT-Xent over the valid rows of ``query (N, d)`` and ``key (N, d)`` (pairs by row), averaged over the
    ``2 n_valid`` anchors; 0 when no row is valid."""
    n = query.shape[0]
    z = F.normalize(torch.cat([query, key]).float(), dim=-1)
    valid = torch.cat([ok, ok])
    sim = z @ z.T / tau
    self_or_invalid = torch.eye(2 * n, dtype=torch.bool, device=z.device) | ~valid[None]
    sim = sim.masked_fill(self_or_invalid, MASKED)
    partner = torch.arange(2 * n, device=z.device).roll(n)
    per_anchor = sim.logsumexp(-1) - sim.gather(1, partner[:, None])[:, 0]
    return masked_mean(per_anchor, valid)


@FRAMEWORKS.register("simclr")
class SimCLRLoss(PixelFramework):
    """In-batch NT-Xent between the two views' drawn pixels (module docstring); ``options.tau`` (0.1)."""

    name = "simclr"
    source = "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020"

    def objective(self, query, key, ok, *, generator=None, strategy=None, update=False, head=None):
        return nt_xent(query, key, ok, self.option("tau", TAU))
