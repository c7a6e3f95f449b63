"""VICReg's variance, invariance and covariance terms over sampled pixel embeddings (``finetune.framework=vicreg``).

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning", ICLR 2022
(arXiv 2105.04906), eq. (1)-(6), with the constants of the official ``main_vicreg.py``:
``L = λ s(Z, Z') + μ [v(Z) + v(Z')] / 2 + ν [c(Z) + c(Z')]`` with

- invariance ``s = mean over rows and dimensions of (z_i - z'_i)²`` (the paper's ``1/n Σ ||z_i - z'_i||²`` / d),
- variance ``v(Z) = 1/d Σ_j max(0, γ - sqrt(Var(z^j) + ε))`` (unbiased variance over the rows, γ = 1, ε = 1e-4),
- covariance ``c(Z) = 1/d Σ_{i != j} C(Z)_ij²``, ``C(Z) = 1/(n-1) Σ (z - z̄)(z - z̄)^T``,

λ = μ = 25, ν = 1 (the paper's). The embeddings are not normalised. Here ``Z`` holds the student's embeddings of the
drawn pixels and ``Z'`` the EMA teacher's of the same pixels (VICReg: two augmented views through the same network,
both with gradient; the teacher's terms here are constants); VICReg's expander is the representation itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arco.losses.frameworks._base import FRAMEWORKS, PixelFramework

__all__ = ["VICRegLoss", "vicreg_terms", "WEIGHTS"]

WEIGHTS = (25.0, 25.0, 1.0)  # λ (invariance), μ (variance), ν (covariance): VICReg's
GAMMA, EPS = 1.0, 1e-4


def _variance_covariance(z: torch.Tensor, w: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = z.shape[1]
    centred = (z - (z * w).sum(0) / n) * w
    cov = centred.T @ centred / (n - 1)
    std = torch.sqrt(torch.diagonal(cov) + EPS)
    off = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
    return F.relu(GAMMA - std).mean(), off / d


def vicreg_terms(query: torch.Tensor, key: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(invariance, variance, covariance)`` over the valid rows of ``query``/``key (N, d)`` (module docstring);
    zeros when fewer than two rows are valid."""
    w = ok.float()[:, None]
    n = w.sum()
    enough = n >= 2
    n = n.clamp_min(2)
    inv = ((query - key) ** 2 * w).sum() / (n * query.shape[1])
    var_q, cov_q = _variance_covariance(query, w, n)
    var_k, cov_k = _variance_covariance(key, w, n)
    terms = (inv, (var_q + var_k) / 2, cov_q + cov_k)
    return tuple(torch.where(enough, t, t * 0) for t in terms)


@FRAMEWORKS.register("vicreg")
class VICRegLoss(PixelFramework):
    """VICReg on pixels (module docstring); ``options.weights`` = (λ, μ, ν) (25, 25, 1)."""

    name = "vicreg"
    source = "Bardes, Ponce, LeCun, VICReg, ICLR 2022"

    def objective(self, query, key, ok, *, generator=None, strategy=None, update=False, head=None):
        lam, mu, nu = self.options.weights or WEIGHTS
        inv, var, cov = vicreg_terms(query.float(), key.float(), ok)
        return lam * inv + mu * var + nu * cov
