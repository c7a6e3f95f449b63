"""L_contrast as the reference code defines it (``compute_contra_memobank_loss`` in ``code/loss_helper_3d.py``,
called from ``code/train_arco_2d.py``; docs/methods.md): anchors from an entropy percentile, the class-mean positive
over every candidate, and hard negatives from per-class FIFO banks, with the sampler (NS / SG / SAG) on the anchors
*and* on the negatives.

Per step, with ``B = B_l + B_u`` rows (labeled first; the unlabeled rows are the strong, CutMix view), labels
``y`` (ground truth; pseudo-labels carried through CutMix), the teacher's probabilities ``p`` on those rows and the
student's entropy ``H`` on the unlabeled rows:

- ``α_t = 20 (1 - t/T)`` %; *low* = labeled pixels, and unlabeled pixels with ``H <=`` its ``α_t`` percentile;
  *high* = labeled pixels, and unlabeled pixels with ``H >=`` its ``100 - α_t`` percentile (``torch.quantile``,
  linear interpolation, as ``np.percentile``; the reference counts epochs, here ``t`` is the iteration).
- candidates of class c: ``y = c`` and *low*; anchors: candidates with ``p_c > δ_p = 0.3``.
- positive of class c: the mean teacher representation over **all** its candidates (detached).
- negatives of class c, pushed into bank c (FIFO, the newest ``K_c`` kept) **before** this step's draws:
  ``p_c < δ_n`` (0.97) and *high* and a rank rule on the teacher's ranking of c at the pixel:

  - ``literal`` (the code as written): ``y = c`` **and** (labeled: c among the top-3 **and** ``y != c``;
    unlabeled: c at rank 3..19). The labeled terms exclude each other (no labeled key is ever pushed), and with
    4 classes the unlabeled window is the last rank only; with 2 classes it is empty. Banks start with one zero key
    (cosine 0). Classes are also matched as the reference does: the i-th class *that has candidates* takes its
    negatives from the bank of the i-th class index, so an absent class shifts the rest.
  - ``intended`` (U2PL's rule, as its paper states it): no ``y = c`` factor; labeled: ``y != c`` and c among the
    top ``low_rank``; unlabeled: c at rank ``min(low_rank, C - 1) .. high_rank - 1``; banks start empty; classes
    matched by label value.
- loss: for each class with anchors and a non-empty bank, ``num_queries`` anchors drawn from its anchors (the
  sampler on the pixel grid, without replacement), each against the positive and ``num_negatives`` keys drawn from
  its bank (the sampler over enqueue-order blocks, with replacement: :func:`arco.sampling.bank.sample_bank`);
  logits = cosine / τ; cross-entropy with the positive as target, averaged over the anchors; summed over classes
  and divided by the number of classes with candidates. Zero when at most one class has candidates.

Queries never gather a ``(C, Q, N, dim)`` tensor: the negatives' similarities are computed at the draws only
(:func:`arco.losses.sampled_dot.sampled_dot`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arco import sampling
from arco._checks import choice
from arco._dist import is_distributed
from arco.losses.banks import ClassBanks
from arco.losses.sampled_dot import sampled_dot
from arco.sampling.bank import sample_bank

__all__ = ["HardNegativeContrastiveLoss", "ContrastMasks", "contrast_masks", "class_ranks", "RULES"]

#: The negative-mask and class-matching rules (module docstring).
RULES = ("literal", "intended")


@dataclass
class ContrastMasks:
    """Where anchors, positives and negatives come from, over the ``P = B * prod(S)`` pixels of the batch.

    ``candidate (P,)``: the pixel is a candidate of its own class ``label``; ``anchor (P,)``: candidate with
    ``p_label > δ_p``; ``negative (C, P)``: the pixel's teacher key goes to bank c.
    """

    candidate: torch.Tensor
    anchor: torch.Tensor
    negative: torch.Tensor


def class_ranks(prob: torch.Tensor) -> torch.Tensor:
    """``(B, C, *S)`` int64: the rank of every class at every pixel in the descending order of ``prob``."""
    order = prob.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    shape = [1] * prob.dim()
    shape[1] = prob.shape[1]
    return ranks.scatter_(1, order, torch.arange(prob.shape[1], device=prob.device).view(shape).expand_as(order))


def entropy_masks(entropy: torch.Tensor, alpha: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` bool masks of ``entropy (B_u, *S)``: at or below its ``alpha`` % percentile, at or above its
    ``100 - alpha`` % percentile (``alpha`` in [0, 100])."""
    flat = entropy.reshape(-1).float()
    q = torch.as_tensor(alpha, dtype=flat.dtype, device=flat.device) / 100
    lo, hi = torch.quantile(flat, torch.stack([q, 1 - q]))
    return entropy <= lo, entropy >= hi


def contrast_masks(
    label: torch.Tensor,
    labeled: int,
    prob: torch.Tensor,
    entropy: torch.Tensor,
    alpha: torch.Tensor | float,
    rule: str = "intended",
    delta_p: float = 0.3,
    delta_n: float = 0.97,
    ranks: tuple[int, int] = (3, 20),
) -> ContrastMasks:
    """The anchor, candidate and negative masks of one batch (module docstring).

    Args:
        label: ``(B, *S)`` int64, labeled rows first.
        labeled: ``B_l``.
        prob: ``(B, C, *S)`` the teacher's probabilities on the same rows.
        entropy: ``(B - B_l, *S)`` the student's prediction entropy on the unlabeled rows.
        alpha: ``α_t`` in percent.
        rule: ``"literal"`` or ``"intended"``.
        delta_p / delta_n: the anchor and negative probability thresholds (0.3 / 0.97).
        ranks: ``(low_rank, high_rank)`` of the negative rank window (3, 20).
    """
    rule = choice("contrast_rule", rule, RULES)
    b, c = prob.shape[:2]
    low_u, high_u = entropy_masks(entropy, alpha)
    ones = torch.ones_like(label[:labeled], dtype=torch.bool)
    low = torch.cat([ones, low_u]).reshape(-1)
    high = torch.cat([ones, high_u]).reshape(-1)
    lab = label.reshape(-1)
    p = prob.movedim(1, 0).reshape(c, -1)  # (C, P)
    own = p.gather(0, lab.clamp(0, c - 1)[None])[0]
    rank = class_ranks(prob).movedim(1, 0).reshape(c, -1)
    is_l = torch.zeros(b, dtype=torch.bool, device=label.device)
    is_l[:labeled] = True
    is_l = is_l.view(b, *([1] * (label.dim() - 1))).expand_as(label).reshape(-1)
    cls = torch.arange(c, device=label.device)[:, None]
    is_c = lab[None] == cls
    low_rank, high_rank = ranks
    if rule == "intended":
        low_rank = min(low_rank, c - 1)
    labeled_rule = (rank < ranks[0]) & ~is_c
    unlabeled_rule = (rank >= low_rank) & (rank < high_rank)
    negative = high[None] & (p < delta_n) & torch.where(is_l[None], labeled_rule, unlabeled_rule)
    if rule == "literal":
        negative &= is_c
    return ContrastMasks(low, low & (own > delta_p), negative)


RepAt = Callable[[torch.Tensor], torch.Tensor]


class HardNegativeContrastiveLoss(nn.Module):
    """The reference's L_contrast with per-class banks on the device (module docstring).

    Args:
        num_classes: C.
        dim: representation width.
        strategy: sampler for anchors and negatives (``"ns"``, ``"sg"``, ``"sag"``).
        grid: the pixel sampler's cells per axis; bank_blocks: the bank sampler's strata (reference: 4 x 4).
        num_queries / num_negatives: anchors per class (256) and negatives per anchor (512).
        tau: temperature (0.5).
        capacities: bank sizes per class (reference: 50 000 for class 0, 30 000 for the others); one int = all.
        rule: ``"literal"`` or ``"intended"``.
        delta_p / delta_n / ranks: as :func:`contrast_masks`.
        alpha0: ``α_0`` of the entropy schedule ``α_t = α_0 (1 - t/T)`` (20 %).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        strategy: str = "sg",
        grid: int | tuple[int, ...] = 4,
        bank_blocks: int = 16,
        num_queries: int = 256,
        num_negatives: int = 512,
        tau: float = 0.5,
        capacities: int | Sequence[int] = (50000, 30000),
        rule: str = "intended",
        delta_p: float = 0.3,
        delta_n: float = 0.97,
        ranks: tuple[int, int] = (3, 20),
        alpha0: float = 20.0,
    ) -> None:
        super().__init__()
        if min(num_classes, dim, num_queries, num_negatives, bank_blocks) < 1 or tau <= 0:
            raise ValueError(
                "HardNegativeContrastiveLoss: num_classes, dim, num_queries, num_negatives and bank_blocks must be "
                f">= 1 and tau > 0, got {num_classes}, {dim}, {num_queries}, {num_negatives}, {bank_blocks}, {tau}"
            )
        self.num_classes, self.strategy, self.grid, self.bank_blocks = num_classes, strategy, grid, bank_blocks
        self.num_queries, self.num_negatives, self.tau = num_queries, num_negatives, tau
        self.rule = choice("contrast_rule", rule, RULES)
        self.delta_p, self.delta_n, self.ranks, self.alpha0 = delta_p, delta_n, tuple(ranks), alpha0
        self.banks = ClassBanks(expand_capacities(capacities, num_classes), dim, init_key=self.rule == "literal")

    def forward(
        self,
        label: torch.Tensor,
        labeled: int,
        prob: torch.Tensor,
        entropy: torch.Tensor,
        progress: torch.Tensor | float,
        teacher_map: torch.Tensor,
        rep_student: RepAt,
        generator: torch.Generator | None = None,
        update_bank: bool = True,
        strategy: str | None = None,
    ) -> torch.Tensor:
        """The loss of one batch.

        Args:
            label, labeled, prob, entropy: as :func:`contrast_masks`.
            progress: ``t / T`` in [0, 1].
            teacher_map: ``(B, dim, *S)`` the teacher's dense representation (constant).
            rep_student: ``index (N,) -> (N, dim)`` the student's representation at flat positions of
                ``(B, *S)`` (with gradient).
            generator: drives both samplers.
            update_bank: push this step's negatives before drawing (training); ``False`` leaves the banks as they
                are (diagnostics that evaluate the loss many times at one state).
            strategy: override the sampler for this call (diagnostics).
        """
        c, q_num = self.num_classes, self.num_queries
        alpha = self.alpha0 * (1 - torch.as_tensor(progress, dtype=torch.float32).clamp(0, 1))
        masks = contrast_masks(label, labeled, prob, entropy, alpha, self.rule, self.delta_p, self.delta_n, self.ranks)
        keys = teacher_map.detach().float().movedim(1, -1).reshape(-1, teacher_map.shape[1])  # (P, dim)
        lab = label.reshape(-1)
        positive, has_candidates = class_means(keys, lab, masks.candidate, c)
        if update_bank:
            self.push(keys, masks.negative)
        strategy = self.strategy if strategy is None else strategy
        index, ok = sampling.sample_per_class(
            label, c, q_num, strategy, grid=self.grid, valid=masks.anchor.view_as(label), generator=generator
        )
        query = F.normalize(rep_student(index.reshape(-1)).float(), dim=-1).view(c, q_num, -1)
        bank_of = self.bank_order(has_candidates)
        sizes = self.banks.count[bank_of]
        pos = sample_bank(sizes, q_num * self.num_negatives, strategy, self.bank_blocks, generator)
        rows = self.banks.physical(bank_of[:, None], pos).view(c * q_num, self.num_negatives)
        use = ok.any(1) & (sizes > 0) & has_candidates[bank_of] if self.rule == "literal" else None
        if use is None:
            use = ok.any(1) & (sizes > 0) & has_candidates
        draw_ok = (ok & use[:, None]).reshape(-1, 1).expand(-1, self.num_negatives)
        neg = sampled_dot(query.reshape(c * q_num, -1), self.banks.table().float(), rows, draw_ok)
        pos_sim = (query * F.normalize(positive, dim=-1)[:, None]).sum(-1, keepdim=True)
        logits = torch.cat([pos_sim, neg.view(c, q_num, -1)], dim=-1) / self.tau
        per_anchor = logits.logsumexp(-1) - logits[..., 0]
        per_class = torch.where(ok, per_anchor, 0).sum(1) / ok.sum(1).clamp_min(1)
        valid_classes = has_candidates.sum()
        total = torch.where(use, per_class, 0).sum() / valid_classes.clamp_min(1)
        return torch.where(valid_classes > 1, total, total * 0)

    def anchor_losses(
        self,
        query: torch.Tensor,
        classes: torch.Tensor,
        positive: torch.Tensor,
        generator: torch.Generator | None = None,
        strategy: str | None = None,
    ) -> torch.Tensor:
        """``(N,)``: the loss each anchor would contribute: ``query (N, dim)`` (any scale) of class ``classes (N,)``
        against ``positive (C, dim)`` and ``num_negatives`` keys drawn from its class's bank by the sampler (as in
        :meth:`forward`; the banks are read, not updated). NaN for an anchor whose bank is empty. Used by
        ``arco landscape pixels`` (every pixel of a slice as an anchor)."""
        n, k = query.shape[0], self.num_negatives
        q = F.normalize(query.float(), dim=-1)
        sizes = self.banks.count[classes]
        strategy = self.strategy if strategy is None else strategy
        pos = sample_bank(sizes, k, strategy, self.bank_blocks, generator)
        rows = self.banks.physical(classes[:, None], pos)
        neg = sampled_dot(q, self.banks.table().float(), rows, (sizes > 0)[:, None].expand(n, k))
        pos_sim = (q * F.normalize(positive.float(), dim=-1)[classes]).sum(-1, keepdim=True)
        logits = torch.cat([pos_sim, neg], dim=-1) / self.tau
        loss = logits.logsumexp(-1) - logits[:, 0]
        return torch.where(sizes > 0, loss, torch.nan)

    def bank_order(self, has_candidates: torch.Tensor) -> torch.Tensor:
        """``(C,)``: the bank row i's anchors are contrasted with. ``intended``: its own class. ``literal``: the
        i-th class that has candidates (the reference indexes ``memobank[valid_classes[i]]`` while taking anchors
        of class i), so that an absent class shifts the classes after it."""
        classes = torch.arange(self.num_classes, device=has_candidates.device)
        if self.rule == "intended":
            return classes
        return torch.sort((~has_candidates).long(), stable=True).indices

    @torch.no_grad()
    def push(self, keys: torch.Tensor, negative: torch.Tensor) -> None:
        """Push the keys ``(P, dim)`` of each class's negative pixels ``(C, P)``, in raster order (the newest
        ``K_c`` of them land). On the CPU only the pushed rows are gathered (data-dependent sizes cost nothing
        there); elsewhere a static buffer of ``min(K_max, P)`` rows per class avoids a host sync."""
        c, p = negative.shape
        m = min(self.banks.kmax, p)
        n = negative.sum(1, keepdim=True)
        first = (n - m).clamp_min(0)  # a step's keys beyond K_max would never land
        rank = negative.long().cumsum(1) - 1
        keep = negative & (rank >= first)
        if keys.device.type == "cpu" and not is_distributed():
            cls, pix = keep.nonzero(as_tuple=True)
            self.banks.push_rows(cls, keys[pix])
            return
        slot = torch.where(keep, rank - first, m)
        index = torch.zeros(c, m + 1, dtype=torch.long, device=keys.device)
        index.scatter_(1, slot, torch.arange(p, device=keys.device).expand(c, p))
        valid = torch.arange(m, device=keys.device)[None] < (n - first)
        self.banks.push(keys[index[:, :m]], valid)


def class_means(
    keys: torch.Tensor, label: torch.Tensor, candidate: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean key per class over its candidate pixels ``(C, dim)`` (zeros where none) and whether it has any."""
    target = torch.where(candidate & (label >= 0) & (label < num_classes), label, num_classes)
    sums = keys.new_zeros(num_classes + 1, keys.shape[1]).index_add_(0, target, keys)[:num_classes]
    counts = torch.zeros(num_classes + 1, device=keys.device, dtype=torch.long)
    counts = counts.index_add_(0, target, torch.ones_like(target))[:num_classes]
    return sums / counts.clamp_min(1)[:, None].to(sums.dtype), counts > 0


def expand_capacities(capacities: int | Sequence[int], num_classes: int) -> list[int]:
    """Per-class bank sizes: an int for every class, or a list whose last entry repeats (``(50000, 30000)`` =
    50 000 for background, 30 000 for every other class)."""
    if isinstance(capacities, int):
        return [capacities] * num_classes
    caps = [int(k) for k in capacities]
    if not caps:
        raise ValueError("bank sizes: expected an int or a non-empty list of ints")
    return (caps + [caps[-1]] * num_classes)[:num_classes]
