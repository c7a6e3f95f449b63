"""UniMatch (Yang et al., CVPR 2023) as its medical branch trains it on ACDC (``more-scenarios/medical/unimatch.py``).

One network ``f``. The weak unlabeled view ``u`` gives pseudo-labels ``ŷ = argmax f(u)`` with confidence ``q``; two
strong views ``s1``, ``s2`` (colour jitter, blur, and a CutMix box each, pasted from another unlabeled image whose
own pseudo-labels come from ``f`` in eval mode) and a feature-perturbed pass (channel dropout 0.5 on every encoder
map of ``u``, decoded) are trained towards them on the confident pixels (``q >= 0.95``):

``L = ½·[½(CE + Dice)(f(x_l), y_l) + 0.25·D(f(s1)) + 0.25·D(f(s2)) + 0.5·D(f_fp(u))]``

where ``D`` is the soft Dice loss over the confident pixels only (the medical code uses Dice, not CE, for the
unlabeled terms). The network predicts. 2D only: UniMatch has no 3D code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from arco.augment import gaussian_blur, uniform
from arco.losses import SupervisedLoss
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method

__all__ = ["UniMatchConfig", "UniMatchMethod", "masked_dice_loss", "cutmix_boxes", "jitter", "channel_dropout"]

#: Rejection tries per CutMix box: the code redraws (aspect ratio, corner) until the box fits; with 128 tries a
#: box fails to fit with probability ~1e-6 (then the last try is clamped into the image).
_BOX_TRIES = 128
_DICE_SMOOTH = 1e-5


@dataclass(frozen=True)
class UniMatchConfig:
    """UniMatch's parameters (``configs/acdc.yaml`` and ``unimatch.py`` of the medical branch).

    Attributes:
        conf_thresh: confidence threshold of the pseudo-labels (0.95).
        weight_s / weight_fp: weights of each strong view's and of the feature-perturbation loss (0.25 / 0.5),
            inside ``L = ½(L_x + weight_s·(L_s1 + L_s2) + weight_fp·L_fp)``.
        sup_weight: ``L_x = sup_weight·(CE + Dice)`` (0.5: ``(CE + Dice) / 2``).
        fp_dropout: channel dropout (``nn.Dropout2d``) rate on every encoder map (0.5).
        cutmix_p / cutmix_area / cutmix_ratio: a box with probability 0.5, area fraction U(0.02, 0.4), aspect
            ratio U(0.3, 1/0.3) (``obtain_cutmix_box``).
        jitter_p / brightness / contrast: ``ColorJitter(0.5, 0.5, 0.5, 0.25)`` with probability 0.8; on grey
            images only brightness and contrast act (factors U(0.5, 1.5), random order).
        blur_p / blur_sigma: Gaussian blur with probability 0.5, sigma U(0.1, 2.0) pixels.
    """

    conf_thresh: float = 0.95
    weight_s: float = 0.25
    weight_fp: float = 0.5
    sup_weight: float = 0.5
    fp_dropout: float = 0.5
    cutmix_p: float = 0.5
    cutmix_area: tuple[float, float] = (0.02, 0.4)
    cutmix_ratio: tuple[float, float] = (0.3, 1 / 0.3)
    jitter_p: float = 0.8
    brightness: float = 0.5
    contrast: float = 0.5
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        for name in ("conf_thresh", "cutmix_p", "jitter_p", "blur_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.fp_dropout < 1.0:
            raise ValueError(f"fp_dropout must be in [0, 1), got {self.fp_dropout}")
        for name in ("weight_s", "weight_fp", "brightness", "contrast"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.sup_weight > 0:
            raise ValueError(f"sup_weight must be > 0, got {self.sup_weight}")
        for name, lo in (("cutmix_area", 0.0), ("cutmix_ratio", 0.0), ("blur_sigma", 0.0)):
            a, b = getattr(self, name)
            if not lo < a <= b:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {getattr(self, name)}")
        if self.cutmix_area[1] > 1.0:
            raise ValueError(f"cutmix_area must lie in (0, 1], got {self.cutmix_area}")


def masked_dice_loss(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of ``softmax(logits)`` against ``target`` over the pixels where ``keep`` is True, averaged
    over classes: ``mean_c 1 - (2·sum p_c y_c + ε) / (sum p_c^2 + sum y_c + ε)`` with sums over the batch and the
    kept pixels, ``ε = 1e-5`` (UniMatch's ``DiceLoss`` with ``ignore``). Nothing kept gives 0."""
    prob = logits.float().softmax(1)
    with torch.no_grad():
        onehot = torch.zeros_like(prob).scatter_(1, target.unsqueeze(1), 1.0)
        k = keep.unsqueeze(1).to(prob.dtype)
    dims = (0, *range(2, prob.dim()))
    inter = (prob * onehot * k).sum(dims)
    denom = (prob * prob * k).sum(dims) + (onehot * k).sum(dims)
    return (1.0 - (2.0 * inter + _DICE_SMOOTH) / (denom + _DICE_SMOOTH)).mean()


def cutmix_boxes(
    batch: int,
    size: tuple[int, int],
    generator: torch.Generator,
    device: torch.device,
    p: float,
    area: tuple[float, float],
    ratio: tuple[float, float],
) -> torch.Tensor:
    """One box per item with probability ``p``: bool ``(B, H, W)``. Area ``U(area)·H·W``, then (aspect ratio
    ``U(ratio)``, top-left corner uniform on the image) redrawn until the ``floor(sqrt(A/r)) x floor(sqrt(A·r))``
    box fits, as UniMatch's ``obtain_cutmix_box`` (vectorised over :data:`_BOX_TRIES` tries)."""
    h, w = size
    r = uniform(batch * (2 + 3 * _BOX_TRIES), generator, device).double()
    on = r[:batch] < p
    pixels = (area[0] + (area[1] - area[0]) * r[batch : 2 * batch]) * h * w
    tries = r[2 * batch :].view(3, _BOX_TRIES, batch)
    aspect = ratio[0] + (ratio[1] - ratio[0]) * tries[0]
    bw, bh = torch.sqrt(pixels / aspect).floor(), torch.sqrt(pixels * aspect).floor()
    x0, y0 = (tries[1] * w).floor(), (tries[2] * h).floor()
    fits = (x0 + bw <= w) & (y0 + bh <= h)
    fits[-1] = True
    k = fits.to(torch.int8).argmax(dim=0, keepdim=True)
    bw, bh = bw.gather(0, k)[0].clamp(max=w), bh.gather(0, k)[0].clamp(max=h)
    x0, y0 = torch.minimum(x0.gather(0, k)[0], w - bw), torch.minimum(y0.gather(0, k)[0], h - bh)
    rows = torch.arange(h, device=device, dtype=torch.float64)
    cols = torch.arange(w, device=device, dtype=torch.float64)
    in_rows = (rows[None] >= y0[:, None]) & (rows[None] < (y0 + bh)[:, None])
    in_cols = (cols[None] >= x0[:, None]) & (cols[None] < (x0 + bw)[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None]


def jitter(
    image: torch.Tensor, generator: torch.Generator, brightness: float, contrast: float, p: float
) -> torch.Tensor:
    """torchvision ``ColorJitter`` on grey images, per item with probability ``p``: on the item rescaled to [0, 1],
    brightness ``clamp(z·b)`` and contrast ``clamp((z - mean z)·c + mean z)`` with ``b, c ~ U(1 ± strength)``, in
    random order; then mapped back to the item's range."""
    b = image.shape[0]
    dims = tuple(range(1, image.dim()))
    r = uniform(4 * b, generator, image.device).view(4, b, *([1] * (image.dim() - 1))).to(image.dtype)
    lo, hi = image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    z = (image - lo) / span
    fb, fc = 1 + brightness * (2 * r[0] - 1), 1 + contrast * (2 * r[1] - 1)

    def bright(t: torch.Tensor) -> torch.Tensor:
        return (t * fb).clamp(0, 1)

    def contr(t: torch.Tensor) -> torch.Tensor:
        m = t.mean(dim=dims, keepdim=True)
        return ((t - m) * fc + m).clamp(0, 1)

    z = torch.where(r[2] < 0.5, contr(bright(z)), bright(contr(z)))
    return torch.where(r[3] < p, z * span + lo, image)


def channel_dropout(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``nn.Dropout2d(p)`` in training mode with ``generator``: each (item, channel) map is zeroed with
    probability ``p``, the others scaled by ``1/(1 - p)``."""
    keep = uniform(x.shape[0] * x.shape[1], generator, x.device).view(*x.shape[:2], *([1] * (x.dim() - 2)))
    return x * ((keep >= p).to(x.dtype) / (1.0 - p))


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@register_method
class UniMatchMethod(MethodBase):
    """UniMatch: weak-to-strong consistency with two CutMix strong views and a feature-perturbation stream."""

    name = "unimatch"
    config_class = UniMatchConfig
    description = "UniMatch: weak-to-strong pseudo-labels (0.95) on two CutMix strong views + feature dropout"
    paper = (
        "Yang, Qi, Feng, Zhang & Shi, Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic "
        "Segmentation, CVPR 2023"
    )
    loss_names = ("loss_sup", "loss_s", "loss_fp")
    metric_names = ("confident",)
    init_components = ("student",)
    segmenter = "student"
    spatial_dims = (2,)

    def __init__(self, cfg: UniMatchConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def _strong(self, u: torch.Tensor) -> torch.Tensor:
        cfg, g = self.cfg, self.generator
        x = jitter(u, g, cfg.brightness, cfg.contrast, cfg.jitter_p)
        return gaussian_blur(x, generator=g, sigma=cfg.blur_sigma, p=cfg.blur_p)

    @torch.no_grad()
    def _strong_views(self, u: torch.Tensor):
        """Two strong views with CutMix boxes from a partner image (a random cyclic shift of the batch, so every
        item gets another image when B_u >= 2), and the partner's eval-mode pseudo-labels and confidences."""
        cfg, g, b = self.cfg, self.generator, u.shape[0]
        with _eval_mode(self.student):
            conf_mix, pseudo_mix = self.student(u).logits.float().softmax(1).max(1)
        shift = torch.randint(1, max(b, 2), (1,), generator=g, device=g.device).to(u.device)
        partner = (torch.arange(b, device=u.device) + shift) % b
        views = []
        for _ in range(2):
            s = self._strong(u)
            box = cutmix_boxes(b, tuple(u.shape[2:]), g, u.device, cfg.cutmix_p, cfg.cutmix_area, cfg.cutmix_ratio)
            views.append((torch.where(box[:, None], s[partner], s), box))
        return views, pseudo_mix[partner], conf_mix[partner]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, g = self.cfg, self.generator
        x, u = batch.image_l, batch.image_u
        bl, bu = x.shape[0], u.shape[0]
        views, pseudo_mix, conf_mix = self._strong_views(u)
        maps = self.student.encode(torch.cat([x, u]))
        fp = [channel_dropout(m[bl:], cfg.fp_dropout, g) for m in maps]
        logits = self.student.decode([torch.cat([m, f]) for m, f in zip(maps, fp)]).logits
        logits_x, logits_w, logits_fp = logits[:bl], logits[bl : bl + bu], logits[bl + bu :]
        logits_s1, logits_s2 = self.student(torch.cat([views[0][0], views[1][0]])).logits.chunk(2)
        with torch.no_grad():
            conf_w, pseudo_w = logits_w.float().softmax(1).max(1)
        losses_s = []
        for logits_s, (_, box) in zip((logits_s1, logits_s2), views):
            pseudo = torch.where(box, pseudo_mix, pseudo_w)
            conf = torch.where(box, conf_mix, conf_w)
            losses_s.append(masked_dice_loss(logits_s, pseudo, conf >= cfg.conf_thresh))
        loss_fp = masked_dice_loss(logits_fp, pseudo_w, conf_w >= cfg.conf_thresh)
        loss_x = self.sup(logits_x, batch.label_l)
        loss = 0.5 * (loss_x + cfg.weight_s * (losses_s[0] + losses_s[1]) + cfg.weight_fp * loss_fp)
        logs = {
            "loss_sup": loss_x.detach(),
            "loss_s": (0.5 * (losses_s[0] + losses_s[1])).detach(),
            "loss_fp": loss_fp.detach(),
            "confident": (conf_w >= cfg.conf_thresh).float().mean(),
        }
        return StepOutput(loss, logs)
