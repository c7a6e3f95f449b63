"""SS-Net (Wu et al., MICCAI 2022): pixel-level smoothness under adversarial perturbations and inter-class
separation towards per-class prototypes, following the official code ``ycwu1997/SS-Net`` (``train_ss_2d.py`` /
``train_ss_3d.py``).

The official network is one UNet/VNet (``student``) whose last decoder map (16 channels at full resolution) gives
per-pixel features; a projection head (``projector``, 16 -> 32) and a prediction head (``predictor``, 32 -> 32)
map them to the separation space, and per-class selectors (``selectors``) weight the features
(:mod:`arco.losses.separation`, which also says why the code's memory-side selectors are left out). With ``x``
the labeled + unlabeled batch and ``p`` the network's softmax:

``L = w_s Dice(p(x_l), y) + lambda(t) [ L_lds + beta (L_sep(x_l, y) + L_sep(x_u, argmax p(x_u))) ]``

- ``L_lds`` (VAT, Miyato et al.): ``d ~ U(-0.5, 0.5)`` normalised per image, one power iteration
  ``d <- normalise(grad_d D(p(x + xi d), sg[p(x)]))``, then ``D(p(x + eps d), sg[p(x)])`` with ``D`` the soft Dice
  over all classes, BatchNorm running statistics untouched by the perturbed passes (the code's
  ``_disable_tracking_bn_stats``);
- ``L_sep``: features of every pixel pulled to the memory of its (pseudo-)class; the memory is refreshed each
  step, before the loss, from the projected features (projection head in eval mode) of correctly predicted
  foreground labeled pixels.

Defaults: 2D ``lambda = 0.1`` ramped over the whole schedule and ``eps = 6``; 3D ``lambda = 1`` ramped over 40 x 150
of 15k iterations and ``eps = 10``; ``xi = 10``, ``beta = 0.1``, memory 32 rows per class, ``w_s = 1`` (only Dice
supervises: the code computes CE but does not add it). Deviations: the VAT target ``sg[p(x)]`` is the main forward
pass's prediction, not a second no-grad forward; 3D uses the 2D code's multi-class soft Dice for supervision and VAT
(the 3D code uses a foreground / whole-tensor binary Dice). Although SS-Net comes from MC-Net's authors, its
network has one decoder, as here. Predicts with ``student`` (the official test builds the plain UNet/VNet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from arco.losses import dice_loss
from arco.losses.separation import ClassSelectors, PrototypeMemory, separation_loss
from arco.methods._bydim import with_dim_defaults
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method
from arco.models import PredictionHead, ProjectionHead

__all__ = ["SSNetConfig", "SSNetMethod", "soft_dice", "vat_loss"]

#: ``train_ss_2d.py`` (ACDC) and ``train_ss_3d.py`` (LA) values for the fields left ``None``.
DIM_DEFAULTS = {
    2: {"consistency": 0.1, "rampup": 1.0, "epsilon": 6.0},
    3: {"consistency": 1.0, "rampup": 0.4, "epsilon": 10.0},
}
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class SSNetConfig:
    """Parameters of SS-Net (defaults: ``ycwu1997/SS-Net``).

    Attributes:
        consistency: lambda; ``None`` = the code's (0.1 in 2D, 1.0 in 3D).
        rampup: sigmoid ramp-up length as a fraction of the stage; ``None`` = the code's (1.0 in 2D, 0.4 in 3D).
        epsilon: VAT perturbation norm (``--magnitude``); ``None`` = the code's (6.0 in 2D, 10.0 in 3D).
        xi: VAT finite-difference step of the power iteration (``VAT2d/3d(xi=10.0)``).
        power_iterations: VAT power iterations (``ip=1``).
        separation_weight: beta on the two separation terms (0.1).
        memory_size: memory rows per class (``FeatureMemory(elements_per_class=32)``).
        feature_dim: width of the projection/prediction heads (``feat_dim = 32``).
        sup_weight: w_s on the supervised Dice (1).
    """

    consistency: float | None = None
    rampup: float | None = None
    epsilon: float | None = None
    xi: float = 10.0
    power_iterations: int = 1
    separation_weight: float = 0.1
    memory_size: int = 32
    feature_dim: int = 32
    sup_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("consistency", "rampup", "epsilon"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"ss-net.{name} must be >= 0, got {value}")
        for name in ("xi", "sup_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ss-net.{name} must be > 0, got {getattr(self, name)}")
        for name in ("power_iterations", "memory_size", "feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ss-net.{name} must be >= 1, got {getattr(self, name)}")
        if self.separation_weight < 0:
            raise ValueError(f"ss-net.separation_weight must be >= 0, got {self.separation_weight}")


def soft_dice(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over classes of ``1 - (2 sum p q + 1e-10) / (sum p^2 + sum q^2 + 1e-10)`` (sums over batch and space;
    SS-Net's ``softDiceLoss`` between two probability maps ``(B, C, *S)``)."""
    dims = (0, *range(2, p.dim()))
    inter = (p * q).sum(dims)
    return (1 - (2 * inter + 1e-10) / ((p * p).sum(dims) + (q * q).sum(dims) + 1e-10)).mean()


def _normalise(d: torch.Tensor) -> torch.Tensor:
    return d / (d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-8)


@contextlib.contextmanager
def _bn_stats_frozen(net: nn.Module) -> Iterator[None]:
    """Training-mode BatchNorm (batch statistics) without updating the running statistics."""
    bns = [m for m in net.modules() if isinstance(m, _BN) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def vat_loss(
    net: nn.Module, x: torch.Tensor, target: torch.Tensor, xi: float, eps: float, iterations: int, generator
) -> torch.Tensor:
    """Local distributional smoothness ``D(p(x + eps d_adv), target)`` with ``d_adv`` from ``iterations`` power
    iterations from a random ``d ~ U(-0.5, 0.5)`` drawn from ``generator``; ``target (B, C, *S)`` detached
    probabilities. Only ``d`` is differentiated in the power iterations (the network's gradients are untouched)."""
    gdev = generator.device if generator is not None else x.device
    d = _normalise(torch.rand(x.shape, generator=generator, device=gdev).to(x.device, x.dtype) - 0.5)
    with _bn_stats_frozen(net):
        for _ in range(iterations):
            d = d.detach().requires_grad_(True)
            dist = soft_dice(net(x + xi * d).logits.float().softmax(dim=1), target)
            d = _normalise(torch.autograd.grad(dist, d)[0])
        return soft_dice(net(x + eps * d.detach()).logits.float().softmax(dim=1), target)


@register_method
class SSNetMethod(MethodBase):
    """One network with projection/prediction heads and per-class selectors: Dice + VAT smoothness + separation
    towards a per-class memory. Predicts with ``student``."""

    name = "ss-net"
    config_class = SSNetConfig
    description = "SS-Net: adversarial (VAT) smoothness + inter-class separation towards per-class prototype memories"
    paper = (
        "Wu et al., Exploring Smoothness and Class-Separation for Semi-supervised Medical Image Segmentation, "
        "MICCAI 2022"
    )
    loss_names = ("loss_sup", "loss_lds", "loss_sep")
    init_components = ("student",)
    segmenter = "student"
    spatial_dims = (2, 3)

    def __init__(self, cfg: SSNetConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.cfg = cfg = with_dim_defaults(cfg, spatial_dims, DIM_DEFAULTS)
        self.add_backbone("student")
        fd, k = cfg.feature_dim, num_classes - 1
        self.add_component("projector", ProjectionHead(self.student.feature_channels[-1], fd, fd))
        self.add_component("predictor", PredictionHead(fd, fd, fd))
        self.add_component("selectors", ClassSelectors(k, fd))
        self.add_component("memory", PrototypeMemory(k, cfg.memory_size, fd), "state")

    def _rows(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.movedim(1, -1).reshape(-1, feature_map.shape[1])

    def _separation(self, feature_map: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.predictor(self.projector(self._rows(feature_map)))
        m = self.memory
        return separation_loss(emb, labels.reshape(-1), m.memory, m.count, self.selectors, self.num_classes)

    def _refresh_memory(self, feature_map: torch.Tensor, labels: torch.Tensor, pred: torch.Tensor) -> None:
        was = self.projector.training
        self.projector.eval()  # the code projects the memory candidates with model.eval()
        with torch.no_grad():
            proj = self.projector(self._rows(feature_map.detach()))
        self.projector.train(was)
        correct = ((pred == labels) & (labels > 0)).reshape(-1)
        self.memory.update(proj, labels.reshape(-1), correct, self.selectors)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, bl = self.cfg, batch.image_l.shape[0]
        x = torch.cat([batch.image_l, batch.image_u])
        out = self.student(x)
        prob = out.logits.float().softmax(dim=1)
        with torch.no_grad():
            pred = prob.argmax(dim=1)
        loss_sup = cfg.sup_weight * dice_loss(out.logits[:bl], batch.label_l)
        feats = out.features[-1]
        self._refresh_memory(feats[:bl], batch.label_l, pred[:bl])
        loss_sep = self._separation(feats[:bl], batch.label_l) + self._separation(feats[bl:], pred[bl:])
        loss_lds = vat_loss(self.student, x, prob.detach(), cfg.xi, cfg.epsilon, cfg.power_iterations, self.generator)
        weight = rampup_weight(cfg.consistency, step, self.total_steps, cfg.rampup)
        loss = loss_sup + weight * (loss_lds + cfg.separation_weight * loss_sep)
        logs = {"loss_sup": loss_sup.detach(), "loss_lds": loss_lds.detach(), "loss_sep": loss_sep.detach()}
        return StepOutput(loss, logs)
