"""ISD's similarity distillation over a queue, on sampled pixels (``finetune.framework=isd``).

Tejankar, Koohpayegani, Pillai, Favaro, Pirsiavash, "ISD: Self-Supervised Learning by Iterative Similarity
Distillation", ICCV 2021: the student's similarities to a queue of the teacher's (momentum encoder's) earlier
embeddings are pulled to the teacher's similarities to the same keys,
``L = KL(softmax(k.Q / τ_t) || softmax(q.Q / τ_s))``, with ``q`` the student's embedding through a predictor
(``Linear -> BatchNorm -> ReLU -> Linear``), ``k`` the teacher's, all L2-normalised; no positive key. Defaults of
the paper's ResNet-50 setting (``train_isd_plus.py`` in the authors' README): τ_t = 0.01, τ_s = 0.1, queue 128 000
(ARCO's stage 1 uses the same temperatures).

Here each drawn pixel's student and teacher embeddings are compared with ``num_negatives`` queue keys drawn by the
sampler (the same draws for both, so the two distributions are over the same keys; ISD: the whole queue). The queue
starts empty (ISD: random keys): no loss until it holds keys. Momentum: the method's ``ema`` (ISD: 0.99).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arco.losses.frameworks._base import FRAMEWORKS, MASKED, KeyQueue, PixelFramework, Predictor, masked_mean
from arco.losses.sampled_dot import sampled_dot

__all__ = ["ISDLoss", "similarity_kl"]

TAU_STUDENT, TAU_TEACHER = 0.1, 0.01  # ISD (ResNet-50, train_isd_plus.py --temp_s / --temp_t)
QUEUE = 128000  # ISD --queue_size


def similarity_kl(
    sim_student: torch.Tensor, sim_teacher: torch.Tensor, valid: torch.Tensor, tau_s: float, tau_t: float
) -> torch.Tensor:
    """``(N,)``: ``KL(softmax(sim_teacher / τ_t) || softmax(sim_student / τ_s))`` over the entries ``valid (N, K)``
    of the cosine similarities ``(N, K)``."""
    log_s = F.log_softmax(sim_student.masked_fill(~valid, MASKED * tau_s) / tau_s, dim=-1)
    log_t = F.log_softmax(sim_teacher.masked_fill(~valid, MASKED * tau_t) / tau_t, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


@FRAMEWORKS.register("isd")
class ISDLoss(PixelFramework):
    """ISD on pixels (module docstring); ``options.tau`` (student, 0.1), ``options.tau_teacher`` (0.01),
    ``options.queue_size`` (128 000)."""

    name = "isd"
    source = "Tejankar et al., ISD: Self-Supervised Learning by Iterative Similarity Distillation, ICCV 2021"

    def __init__(self, num_classes: int, dim: int, **kwargs) -> None:
        super().__init__(num_classes, dim, **kwargs)
        size = int(self.option("queue_size", QUEUE))
        self.queue = KeyQueue(size, dim, num_classes * self.num_queries)

    def build_head(self, dim, hidden):
        return Predictor(dim, hidden)

    def objective(self, query, key, ok, *, generator=None, strategy=None, update=False, head=None):
        if head is None:
            raise ValueError("ISDLoss: needs its predictor (head=...); build it with build_head()")
        if update:
            self.queue.flush()
        q = F.normalize(head(query, ok).float(), dim=-1)
        k = F.normalize(key, dim=-1)
        rows, queue_ok = self.queue.draw(q.shape[0], self.num_negatives, strategy or self.strategy,
                                         self.bank_blocks, generator)  # fmt: skip
        mask = queue_ok & ok[:, None]
        table = self.queue.table().float()
        sim_q = sampled_dot(q, table, rows, mask)
        with torch.no_grad():
            sim_k = sampled_dot(k, table, rows, mask)
        kl = similarity_kl(sim_q, sim_k, mask, self.option("tau", TAU_STUDENT), self.option("tau_teacher", TAU_TEACHER))
        loss = masked_mean(kl, ok & queue_ok[:, 0])
        if update:
            self.queue.stash(k, ok)
        return loss
