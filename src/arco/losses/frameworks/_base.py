"""What every pixel-level framework of ``finetune.framework`` shares: the registry, the pixel draw (NS / SG / SAG by
:func:`arco.sampling.sample_per_class`), a FIFO key queue sampled by :func:`arco.sampling.bank.sample_bank`, and the
predictor MLP with batch statistics over the valid draws.

The two views are ARCO's stage-2 ones: the student's representation (fused map + linear pair, with gradient) of the
labeled and strong unlabeled images, and the EMA teacher's representation (fused map, constant) of the *same* images.
A drawn pixel's student and teacher embeddings are a positive pair. Pixels are drawn per class (ground truth on the
labeled rows, the teacher's pseudo-label on the unlabeled rows; every pixel is a candidate): the classes are only the
sampler's strata, no framework reads them. Draws a class cannot fill (``ok`` False) never count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from arco import sampling
from arco._checks import choice
from arco.losses.banks import ClassBanks
from arco.registry import Registry
from arco.sampling.bank import sample_bank

__all__ = ["FRAMEWORKS", "FrameworkOptions", "PixelFramework", "KeyQueue", "Predictor", "MASKED"]

#: ``finetune.framework`` names -> :class:`PixelFramework` subclasses (``arco`` itself is not here: it is the
#: method's own L_contrast).
FRAMEWORKS: Registry[PixelFramework] = Registry("pixel contrastive framework")
#: Logit given to a masked similarity: far below any cosine / temperature, yet finite (no NaN gradients).
MASKED = -1.0e4

RepAt = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FrameworkOptions:
    """Per-framework settings; ``None`` = the framework's own default (its paper's; see each class).

    Attributes:
        tau: temperature (SimCLR 0.1, MoCo v2 0.2, ISD's student 0.1).
        tau_teacher: ISD's teacher temperature (0.01).
        queue_size: keys in the queue (MoCo 65 536, ISD 128 000).
        weights: VICReg's invariance, variance and covariance weights (25, 25, 1).
    """

    tau: float | None = None
    tau_teacher: float | None = None
    queue_size: int | None = None
    weights: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("tau", "tau_teacher", "queue_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"framework option {name} must be > 0, got {value}")
        if self.weights is not None and (len(self.weights) != 3 or min(self.weights) < 0):
            raise ValueError(f"framework option weights must be three numbers >= 0, got {self.weights}")


def masked_mean(values: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Mean of ``values (N,)`` over ``ok (N,)``; 0 (with a graph) when nothing is valid."""
    total = torch.where(ok, values, 0).sum()
    return total / ok.sum().clamp_min(1)


class Predictor(nn.Module):
    """BYOL's / ISD's predictor on pixel rows: ``Linear(dim, hidden, bias=False) -> BatchNorm -> ReLU ->
    Linear(hidden, dim)``. The BatchNorm uses the statistics of the valid rows of the call (``valid``; BYOL/ISD's
    BatchNorm over the batch), in training and evaluation alike (it only serves the loss), with a learnt affine map.
    """

    def __init__(self, dim: int, hidden: int, eps: float = 1e-5) -> None:
        super().__init__()
        if min(dim, hidden) < 1:
            raise ValueError(f"Predictor: dim and hidden must be >= 1, got {dim}, {hidden}")
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.weight = nn.Parameter(torch.ones(hidden))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.fc2 = nn.Linear(hidden, dim)
        self.eps = eps

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc1(x)
        w = (torch.ones(h.shape[0], device=h.device) if valid is None else valid.float())[:, None]
        n = w.sum().clamp_min(1)
        mean = (h * w).sum(0) / n
        var = ((h - mean) ** 2 * w).sum(0) / n  # biased, as BatchNorm normalises
        h = (h - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return self.fc2(F.relu(h))


class KeyQueue(nn.Module):
    """A FIFO queue of teacher keys (MoCo's / ISD's), drawn from by the sampler over enqueue-order blocks.

    A step's keys are *stashed* (buffers ``pending``, ``pending_ok``: checkpointed, so a resumed run is identical)
    and pushed at the start of the next training call, before its draws: a step never meets its own keys (MoCo and
    ISD enqueue after computing the logits), and the queue is never written while a graph still reads it.

    Args:
        size: capacity (keys). dim: key width. rows: keys stashed per step (``num_classes * num_queries``).
    """

    def __init__(self, size: int, dim: int, rows: int) -> None:
        super().__init__()
        self.bank = ClassBanks([int(size)], dim)
        self.register_buffer("pending", torch.zeros(rows, dim))
        self.register_buffer("pending_ok", torch.zeros(rows, dtype=torch.bool))

    @property
    def count(self) -> torch.Tensor:
        """``(1,)`` keys in the queue."""
        return self.bank.count

    @torch.no_grad()
    def flush(self) -> None:
        """Push the stashed keys (L2-normalised, oldest first) and clear the stash."""
        self.bank.push(self.pending[None], self.pending_ok[None])
        self.pending_ok.zero_()

    @torch.no_grad()
    def stash(self, keys: torch.Tensor, ok: torch.Tensor) -> None:
        self.pending.copy_(keys.detach().to(self.pending.dtype))
        self.pending_ok.copy_(ok)

    def draw(
        self, n: int, num: int, strategy: str, blocks: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows (n, num), valid (n, num))``: ``num`` queue keys for each of ``n`` queries (rows of
        :meth:`table`), drawn with replacement by the sampler; ``valid`` is False while the queue is empty."""
        pos = sample_bank(self.count, n * num, strategy, blocks, generator)
        rows = self.bank.physical(torch.zeros_like(pos), pos).view(n, num)
        return rows, (self.count > 0).expand(n, num)

    def table(self) -> torch.Tensor:
        return self.bank.table()


class PixelFramework(nn.Module):
    """A pixel-level self-supervised objective on sampled pixels (module docstring).

    Subclasses set ``name``, ``source`` and ``defaults`` and implement :meth:`objective`; those with a predictor
    also implement :meth:`build_head` (the method registers the head as a trainable module and passes it back).

    Args:
        num_classes: C (the sampler's strata). dim: representation width.
        strategy: ``"ns"``, ``"sg"`` or ``"sag"`` for the pixels and (queue frameworks) the queue.
        grid: the pixel sampler's cells per axis. bank_blocks: the queue sampler's strata.
        num_queries: pixels drawn per class. num_negatives: queue keys per query (MoCo, ISD).
        options: :class:`FrameworkOptions`.
    """

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        strategy: str = "sg",
        grid: int | tuple[int, ...] = 4,
        bank_blocks: int = 16,
        num_queries: int = 256,
        num_negatives: int = 512,
        options: FrameworkOptions | None = None,
    ) -> None:
        super().__init__()
        if min(num_classes, dim, num_queries, num_negatives, bank_blocks) < 1:
            raise ValueError(
                f"{type(self).__name__}: num_classes, dim, num_queries, num_negatives and bank_blocks must be >= 1, "
                f"got {num_classes}, {dim}, {num_queries}, {num_negatives}, {bank_blocks}"
            )
        choice("strategy", strategy, sampling.STRATEGIES, where=type(self).__name__)
        self.num_classes, self.dim, self.strategy, self.grid = num_classes, dim, strategy, grid
        self.bank_blocks, self.num_queries, self.num_negatives = bank_blocks, num_queries, num_negatives
        self.options = options or FrameworkOptions()

    def option(self, name: str, default: float) -> float:
        value = getattr(self.options, name)
        return default if value is None else value

    def build_head(self, dim: int, hidden: int) -> nn.Module | None:
        """The trainable predictor this framework needs, or ``None``."""
        return None

    def forward(
        self,
        label: torch.Tensor,
        rep_student: RepAt,
        rep_teacher: RepAt,
        generator: torch.Generator | None = None,
        update: bool = True,
        strategy: str | None = None,
        head: nn.Module | None = None,
    ) -> torch.Tensor:
        """The loss of one batch.

        Args:
            label: ``(B, *S)`` int64 (ground truth / pseudo-labels): the classes the sampler stratifies by.
            rep_student / rep_teacher: ``index (N,) -> (N, dim)`` the two views at flat positions of ``(B, *S)``.
            generator: drives the pixel and queue draws.
            update: a training call (queues advance); ``False`` leaves every buffer as it is (diagnostics).
            strategy: override the sampler for this call.
            head: the module :meth:`build_head` made (frameworks with a predictor).
        """
        strategy = self.strategy if strategy is None else strategy
        index, ok = sampling.sample_per_class(
            label, self.num_classes, self.num_queries, strategy, grid=self.grid, generator=generator
        )
        flat, ok = index.reshape(-1), ok.reshape(-1)
        query = rep_student(flat).float()
        with torch.no_grad():
            key = rep_teacher(flat).float()
        return self.objective(query, key, ok, generator=generator, strategy=strategy, update=update, head=head)

    def objective(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        ok: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        strategy: str | None = None,
        update: bool = False,
        head: nn.Module | None = None,
    ) -> torch.Tensor:
        """The framework's loss of student rows ``query (N, dim)`` against teacher rows ``key (N, dim)`` (row i of
        both is the same pixel), over the rows where ``ok (N,)``."""
        raise NotImplementedError
