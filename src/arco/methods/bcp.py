"""BCP: Bidirectional Copy-Paste (Bai et al., CVPR 2023), as ``DeepMed-Lab-ECNU/BCP`` trains it
(``ACDC_BCP_train.py`` in 2D, ``LA_BCP_train.py`` in 3D). Two stages, recipe ``bcp``:

- ``bcp-pretrain`` (labeled only): ``X = L_a ⊙ M + L_b ⊙ (1 - M)`` where ``1 - M`` is one box of 2/3 of every side
  at a random place (shared by the batch); ``L = ½·Σ_r (Dice_r + CE_r)`` over the two regions (outside, box) with
  the mixed label (2D); 3D: ``½·(CE + Dice)`` of the mixed label (LA code).
- ``bcp-selftrain`` (self-training with an EMA teacher, both starting from the pre-trained weights): pseudo-labels
  ``P = LCC(argmax t(U))`` (largest connected component per class), and two bidirectional mixes
  ``X_u = U_a ⊙ M + L_a ⊙ (1 - M)``, ``X_l = L_b ⊙ M + U_b ⊙ (1 - M)``:
  ``L = ½·Σ_{X ∈ {X_u, X_l}} Σ_r w_r (Dice_r + CE_r)`` with weight ``u_weight = 0.5`` on the region whose label is a
  pseudo-label and 1 on the labeled region (``mix_loss``).

``Dice_r`` is the soft Dice restricted to region ``r`` (2D: class-wise sums over the batch, squared denominators,
ε = 1e-10 as ``DiceLoss(mask)``; 3D: per image and class, linear denominators, ε = 1e-5 as ``mask_DiceLoss``);
``CE_r`` the mean cross-entropy over the region. The student predicts (BCP saves and tests the student).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from arco.augment import uniform
from arco.methods.base import Batch, ModelConfig, StepOutput, StudentMethod
from arco.methods.registry import RecipeStage, register_method, register_recipe

__all__ = [
    "BCPPretrainConfig",
    "BCPConfig",
    "BCPPretrainMethod",
    "BCPMethod",
    "context_box",
    "mix_loss",
    "largest_components",
]

_PAPER = (
    "Bai, Chen, Li, Shen & Wang, Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation, CVPR 2023"
)


@dataclass(frozen=True)
class BCPPretrainConfig:
    """Parameters of BCP's labeled-only pre-training.

    Attributes:
        mask_ratio: side of the pasted box as a fraction of each image side (2/3: ``generate_mask`` /
            ``context_mask``).
    """

    mask_ratio: float = 2 / 3

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")


@dataclass(frozen=True)
class BCPConfig(BCPPretrainConfig):
    """Parameters of BCP's self-training stage.

    Attributes:
        mask_ratio: as in pre-training (2/3).
        u_weight: weight of the pseudo-labelled region in ``mix_loss`` (``--u_weight 0.5``).
        ema: teacher momentum (0.99, no warm-up, as ``update_model_ema``).
        largest_component: keep only the largest connected component of each class in the pseudo-labels
            (``get_ACDC_masks(nms=1)`` / ``LargestCC``). Runs on the host (scipy): the method's one device sync per
            step, as in the code; False skips it.
    """

    u_weight: float = 0.5
    ema: float = 0.99
    largest_component: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.u_weight >= 0:
            raise ValueError(f"u_weight must be >= 0, got {self.u_weight}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


def context_box(spatial: tuple[int, ...], ratio: float, generator: torch.Generator, device) -> torch.Tensor:
    """Bool ``spatial`` mask, True inside one box of ``int(n·ratio)`` voxels per axis whose corner is uniform over
    ``0 .. n - size - 1`` (numpy ``randint(0, n - size)``), shared by the whole batch."""
    r = uniform(len(spatial), generator, device)
    mask = torch.ones(spatial, dtype=torch.bool, device=device)
    for ax, n in enumerate(spatial):  # two or three axes
        size = int(n * ratio)
        start = (r[ax] * max(n - size, 1)).floor()
        coord = torch.arange(n, device=device)
        view = [1] * len(spatial)
        view[ax] = n
        mask = mask & ((coord >= start) & (coord < start + size)).view(view)
    return mask


def mix_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    inside: torch.Tensor,
    w_out: float,
    w_in: float,
    per_image: bool = False,
) -> torch.Tensor:
    """``½·(w_out·(Dice + CE)_outside + w_in·(Dice + CE)_inside)`` of ``logits (B, C, *S)`` against the mixed
    ``label (B, *S)``; ``inside (*S)`` bool marks the pasted box (BCP's ``mix_loss`` returned as ``(dice + ce)/2``).
    ``per_image``: the 3D (LA) Dice form."""
    prob = logits.float().softmax(1)
    with torch.no_grad():
        onehot = torch.zeros_like(prob).scatter_(1, label.unsqueeze(1), 1.0)
    ce = F.cross_entropy(logits.float(), label, reduction="none")
    total = logits.new_zeros((), dtype=torch.float32)
    for weight, region in ((w_out, ~inside), (w_in, inside)):  # the two regions
        m = region.to(prob.dtype).expand_as(ce)
        total = total + weight * (_masked_dice(prob, onehot, m, per_image) + (ce * m).sum() / (m.sum() + 1e-16))
    return 0.5 * total


def _masked_dice(prob: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor, per_image: bool) -> torch.Tensor:
    m = mask.unsqueeze(1)
    if per_image:  # LA mask_DiceLoss: per image and class, (p + y) in the denominator, eps 1e-5
        dims = tuple(range(2, prob.dim()))
        inter, denom = (prob * onehot * m).sum(dims), ((prob + onehot) * m).sum(dims)
        return 1.0 - ((2 * inter + 1e-5) / (denom + 1e-5)).mean()
    dims = (0, *range(2, prob.dim()))  # ACDC DiceLoss(mask): class-wise sums over the batch, squares, eps 1e-10
    inter, denom = (prob * onehot * m).sum(dims), (prob * prob * m).sum(dims) + (onehot * m).sum(dims)
    return (1.0 - (2 * inter + 1e-10) / (denom + 1e-10)).mean()


def largest_components(pseudo: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Keep, for every image and foreground class, only its largest connected component (full connectivity:
    8 in 2D, 26 in 3D, as ``skimage.measure.label``); other pixels of that class become background 0.

    One ``scipy.ndimage.label`` call on the ``(B·(C-1), *S)`` stack of class masks (no connection across the
    stack), so no loop over images or classes; it runs on the host (one transfer each way). Ties keep the
    component met first in raster order, as the reference's ``argmax(bincount)``.
    """
    from scipy import ndimage

    arr = pseudo.detach().cpu().numpy()
    nd, k = arr.ndim - 1, num_classes - 1
    fg = arr[:, None] == np.arange(1, num_classes).reshape(1, k, *([1] * nd))
    stack = fg.reshape(-1, *arr.shape[1:])
    structure = np.zeros((3,) * (nd + 1), dtype=bool)
    structure[1] = True
    labels, n = ndimage.label(stack, structure)
    if n == 0:
        return pseudo
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    owner = np.zeros(n + 1, dtype=np.int64)
    owner[flat] = np.repeat(np.arange(stack.shape[0]), flat.size // stack.shape[0])
    ids = np.arange(1, n + 1)
    order = np.lexsort((ids, -sizes, owner[1:]))  # by slice, then larger first, then earlier label
    first = np.r_[True, owner[1:][order][1:] != owner[1:][order][:-1]]
    keep = np.zeros(n + 1, dtype=bool)
    keep[ids[order][first]] = True
    kept = keep[labels].reshape(arr.shape[0], k, *arr.shape[1:]).any(axis=1)
    return torch.from_numpy(arr * kept).to(pseudo.device, non_blocking=True)


def _halves(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:n], x[n : 2 * n]


@register_method
class BCPPretrainMethod(StudentMethod):
    """BCP stage 1: copy-paste between pairs of labeled images (the labeled batch's two halves)."""

    name = "bcp-pretrain"
    config_class = BCPPretrainConfig
    description = "BCP stage 1: supervised copy-paste between labeled images (labeled data only)"
    paper = _PAPER
    loss_names = ("loss_mix",)
    needs_unlabeled = False

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        n = batch.image_l.shape[0] // 2
        if n == 0:
            raise ValueError("bcp-pretrain pastes between pairs of labeled images: set schedule.batch_labeled >= 2")
        (xa, xb), (ya, yb) = _halves(batch.image_l, n), _halves(batch.label_l, n)
        inside = context_box(tuple(xa.shape[2:]), self.cfg.mask_ratio, self.generator, xa.device)
        mixed, label = torch.where(inside, xb, xa), torch.where(inside, yb, ya)
        logits = self.student(mixed).logits
        if self.dims == 3:  # LA code: plain (CE + Dice) / 2 of the mixed label
            everywhere = torch.zeros_like(inside)
            loss = mix_loss(logits, label, everywhere, 1.0, 0.0, per_image=True)
        else:
            loss = mix_loss(logits, label, inside, 1.0, 1.0)
        return StepOutput(loss, {"loss_mix": loss.detach()})


@register_method
class BCPMethod(StudentMethod):
    """BCP stage 2: bidirectional copy-paste between labeled and unlabeled images with EMA-teacher pseudo-labels.
    The teacher starts as the student (both load the pre-trained weights in the code)."""

    name = "bcp-selftrain"
    config_class = BCPConfig
    description = "BCP stage 2: bidirectional labeled<->unlabeled copy-paste with EMA-teacher pseudo-labels"
    paper = _PAPER
    loss_names = ("loss_mix_u", "loss_mix_l")

    def __init__(self, cfg: BCPConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_teacher("teacher", "student")

    @torch.no_grad()
    def pseudo_labels(self, image_u: torch.Tensor) -> torch.Tensor:
        """``argmax`` of the teacher, reduced to each class's largest component when configured."""
        pseudo = self.teacher(image_u).logits.argmax(1)
        return largest_components(pseudo, self.num_classes) if self.cfg.largest_component else pseudo

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg = self.cfg
        n = min(batch.image_l.shape[0], batch.image_u.shape[0]) // 2
        if n == 0:
            raise ValueError(
                "bcp-selftrain pairs labeled and unlabeled images: set batch_labeled and batch_unlabeled >= 2"
            )
        if step == 0:
            self.update_teachers(0.0)  # teacher <- student (the pre-trained weights)
        (la, lb), (ya, yb) = _halves(batch.image_l, n), _halves(batch.label_l, n)
        ua, ub = _halves(batch.image_u, n)
        pa, pb = self.pseudo_labels(torch.cat([ua, ub])).chunk(2)
        inside = context_box(tuple(la.shape[2:]), cfg.mask_ratio, self.generator, la.device)
        per_image = self.dims == 3
        # X_u: unlabeled image with a labeled patch; X_l: labeled image with an unlabeled patch (one forward).
        x_u, x_l = torch.where(inside, la, ua), torch.where(inside, ub, lb)
        logits_u, logits_l = self.student(torch.cat([x_u, x_l])).logits.chunk(2)
        loss_u = mix_loss(logits_u, torch.where(inside, ya, pa), inside, cfg.u_weight, 1.0, per_image)
        loss_l = mix_loss(logits_l, torch.where(inside, pb, yb), inside, 1.0, cfg.u_weight, per_image)
        return StepOutput(loss_u + loss_l, {"loss_mix_u": loss_u.detach(), "loss_mix_l": loss_l.detach()})

    def after_optimizer_step(self, step: int) -> None:
        self.update_teachers(self.cfg.ema)


register_recipe(
    "bcp",
    (RecipeStage("pretrain", "bcp-pretrain", 0.25), RecipeStage("selftrain", "bcp-selftrain", 0.75)),
    "BCP: labeled copy-paste pre-training, then bidirectional copy-paste self-training (1:3 as 10k:30k on ACDC)",
    _PAPER,
)
