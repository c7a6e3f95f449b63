"""SS-Net's inter-class separation (Wu et al., MICCAI 2022; code ``ycwu1997/SS-Net``, from Alonso et al.'s
SemiSeg-Contrastive): per-pixel features are pulled to a small per-class memory of projected labeled features, with
learned per-class weights on the features.

For a class c with features ``f_i`` (``M_c`` rows of class c), memory rows ``m_j`` (``N_c`` rows) and selector
scores ``w_i = sigmoid(S_c(sg[f_i]))`` rescaled to mean 1 over the class's rows:

``L_c = 1/(M_c N_c) sum_i sum_j w_i (1 - cos(f_i, m_j))``,  ``L = 1/C sum_c L_c``

over the classes with at least two features and two memory rows (``C`` counts every class, background included,
as the code divides by ``num_classes``). The code also scores the memory rows with a second set of selectors, but
it rescales their ``(1, N)`` weights by their sum over the first axis, i.e. each weight by itself, so every memory
weight is exactly 1 and those selectors receive no gradient: they are left out here, with the same result.

The memory holds, per foreground class, at most ``E`` projected features of correctly predicted labeled pixels;
when more are available the ``E`` with the *lowest* ``S_c`` score are kept (the code sorts ascending, although its
comment says "highest"); a class absent from a batch keeps its previous memory. Background never enters the memory
(the code masks ``prediction > 0``), so it never contributes.

Everything is vectorised over classes: ``sum_j (1 - cos(f_i, m_j)) = N_c - f_i/|f_i| . sum_j m_j/|m_j|`` reduces the
memory to one vector per class, and each row is scored by the MLP of its own class with BatchNorm statistics over
the rows of that class, as the per-class loop of the code does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from arco._dist import gather_cat

__all__ = ["ClassSelectors", "PrototypeMemory", "separation_loss"]


def _group_counts(group: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros(k, device=group.device, dtype=torch.float32).index_add_(0, group, valid.float())


class ClassSelectors(nn.Module):
    """``k`` scoring MLPs ``Linear(d, d) - BN1d(d) - LeakyReLU(0.2) - Linear(d, 1)``, one per class, applied to
    each row with the MLP of its class (the code's ``contrastive_class_selector_*``).

    BatchNorm normalises with the statistics of the rows of the same class in the call (training-mode BN of the
    per-class loop; the code never evaluates the selectors in eval mode, so no running statistics are kept).

    ``forward(x (N, d), group (N,) long in [0, k), valid (N,) bool) -> (N,)`` scores before the sigmoid (0 on
    invalid rows).
    """

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        if k < 1 or dim < 1:
            raise ValueError(f"ClassSelectors: need k >= 1 and dim >= 1, got k={k}, dim={dim}")
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default initialisation, per class
        self.w1 = nn.Parameter(torch.empty(k, dim, dim).uniform_(-bound, bound))
        self.b1 = nn.Parameter(torch.empty(k, dim).uniform_(-bound, bound))
        self.gamma = nn.Parameter(torch.ones(k, dim))
        self.beta = nn.Parameter(torch.zeros(k, dim))
        self.w2 = nn.Parameter(torch.empty(k, dim).uniform_(-bound, bound))
        self.b2 = nn.Parameter(torch.empty(k).uniform_(-bound, bound))
        self.k, self.dim = k, dim

    def forward(self, x: torch.Tensor, group: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ClassSelectors: x must be (N, {self.dim}), got {tuple(x.shape)}")
        with torch.autocast(x.device.type, enabled=False):  # per-class statistics in float32 under AMP
            return self._scores(x.float(), group.clamp(0, self.k - 1), valid)

    def _scores(self, x: torch.Tensor, group: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # One (N, k*d) product, then each row keeps the block of its class (transient k-fold width only).
        h = (x @ self.w1.permute(1, 0, 2).reshape(self.dim, -1)).view(-1, self.k, self.dim)
        h = h.gather(1, group.view(-1, 1, 1).expand(-1, 1, self.dim)).squeeze(1) + self.b1[group]
        vf = valid.float().unsqueeze(1)
        n = _group_counts(group, valid, self.k).clamp_min(1.0).unsqueeze(1)
        mean = torch.zeros(self.k, self.dim, device=x.device).index_add_(0, group, h * vf) / n
        centred = h - mean[group]
        var = torch.zeros(self.k, self.dim, device=x.device).index_add_(0, group, centred**2 * vf) / n
        h = centred * torch.rsqrt(var[group] + 1e-5) * self.gamma[group] + self.beta[group]
        h = F.leaky_relu(h, 0.2)
        return ((h * self.w2[group]).sum(dim=1) + self.b2[group]) * valid.float()


def _unit_mean_weights(score: torch.Tensor, group: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """``sigmoid(score)`` rescaled to mean 1 over the valid rows of each group (0 on invalid rows)."""
    w = torch.sigmoid(score) * valid.float()
    n = _group_counts(group, valid, k)
    total = torch.zeros(k, device=w.device).index_add_(0, group, w)
    return w * (n / total.clamp_min(1e-12))[group]


def separation_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    memory: torch.Tensor,
    count: torch.Tensor,
    selectors: ClassSelectors,
    num_classes: int,
) -> torch.Tensor:
    """SS-Net's class-to-memory loss (module docstring).

    Args:
        features: ``(N, d)`` predicted features (after the projection and prediction heads), live.
        labels: ``(N,)`` long class of every row in ``0..num_classes-1`` (0 = background, never in the memory).
        memory: ``(num_classes - 1, E, d)`` memory rows of the foreground classes (treated as constants).
        count: ``(num_classes - 1,)`` long valid rows per foreground class.
        selectors: the per-foreground-class weighting MLPs of the features.
        num_classes: C, the divisor.

    Returns:
        Scalar float32 (0, still attached to the selectors and features, when no class qualifies).
    """
    k, e, _ = memory.shape
    fg = labels > 0
    group = (labels - 1).clamp_min(0)
    m_valid = (torch.arange(e, device=memory.device).unsqueeze(0) < count.unsqueeze(1)).float()  # (k, E)
    u = (F.normalize(memory.detach().float(), dim=2) * m_valid.unsqueeze(2)).sum(dim=1)  # (k, d)
    n_count = count.float()
    w = _unit_mean_weights(selectors(features.detach(), group, fg), group, fg, k)
    f = F.normalize(features.float(), dim=1)
    per_row = w * (n_count[group] - (f * u[group]).sum(dim=1))
    m_count = _group_counts(group, fg, k)
    ok = (m_count > 1) & (n_count > 1)
    per_class = torch.zeros(k, device=f.device).index_add_(0, group, per_row * fg.float())
    per_class = per_class / (m_count * n_count).clamp_min(1.0)
    return (per_class * ok.float()).sum() / num_classes


class PrototypeMemory(nn.Module):
    """Per-foreground-class memory of at most ``size`` projected features (``memory (k, size, d)``, ``count
    (k,)``); :meth:`update` replaces a class's rows whenever the batch has candidates for it."""

    def __init__(self, k: int, size: int, dim: int) -> None:
        super().__init__()
        if min(k, size, dim) < 1:
            raise ValueError(f"PrototypeMemory: need k, size, dim >= 1, got {k}, {size}, {dim}")
        self.k, self.size = k, size
        self.register_buffer("memory", torch.zeros(k, size, dim))
        self.register_buffer("count", torch.zeros(k, dtype=torch.long))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, candidate: torch.Tensor, selectors: ClassSelectors):
        """Store, for every foreground class with candidates, its candidate rows (``features (N, d)`` with
        ``labels (N,)`` in ``1..k``, ``candidate (N,)`` bool), keeping the ``size`` lowest-scored ones when there are
        more (the code's ascending sort). Classes without candidates keep their rows. Under DDP the rows of every
        rank are considered together (gathered in rank order), so every rank holds the same memory."""
        features, labels, candidate = gather_cat(features), gather_cat(labels), gather_cat(candidate)
        k, e = self.k, self.size
        group = (labels - 1).clamp(0, k - 1)
        candidate = candidate & (labels > 0)
        score = torch.sigmoid(selectors(features, group, candidate))
        key = torch.where(candidate, group.float() * 2 + score, torch.full_like(score, 2.0 * k + 1))
        order = key.argsort()
        n = _group_counts(group, candidate, k).long()
        start = n.cumsum(0) - n
        g_sorted = group[order]
        rank = torch.arange(order.numel(), device=order.device) - start[g_sorted]
        keep = candidate[order] & (rank < e)
        slot = torch.where(keep, g_sorted * e + rank, torch.full_like(rank, k * e))  # k*e: discarded rows
        fresh = torch.zeros(k * e + 1, features.shape[1], device=features.device, dtype=self.memory.dtype)
        fresh.index_copy_(0, slot, features[order].to(self.memory.dtype))
        touched = n > 0
        self.memory.copy_(torch.where(touched.view(k, 1, 1), fresh[:-1].view(k, e, -1), self.memory))
        self.count.copy_(torch.where(touched, n.clamp(max=e), self.count))
