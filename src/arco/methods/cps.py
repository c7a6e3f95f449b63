"""Cross pseudo supervision (Chen et al., CVPR 2021) as SSL4MIS trains it for medical images.

Two networks of the same architecture, initialised differently, are each trained on the other's hard pseudo-labels
of the unlabeled images:

``L = sum_k [ w_s (CE + Dice)(f_k(x_l), y) + lambda(t) CE(f_k(x_u), argmax f_{3-k}(x_u)) ]``

(SSL4MIS ``train_cross_pseudo_supervision_2D.py`` / ``_3D.py``: ``w_s = 0.5``, ``lambda = 0.1`` with a sigmoid
ramp-up over the whole 30k schedule, pseudo-labels on the unlabeled part only, both networks forwarded on the
concatenated labeled + unlabeled batch). SSL4MIS validates both networks; its test script and this method predict
with the first (``student``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arco._checks import choice
from arco.losses import SupervisedLoss
from arco.methods._bydim import with_dim_defaults
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method

__all__ = ["CPSConfig", "CPSMethod", "INITS", "init_weights"]

#: How the two networks are initialised: ``default`` (two independent draws of PyTorch's default initialisation,
#: SSL4MIS 2D) or ``kaiming-xavier`` (Kaiming-normal convolutions for the first, Xavier-normal for the second, BN
#: weight 1 / bias 0: SSL4MIS 3D ``kaiming_normal_init_weight`` / ``xavier_normal_init_weight``).
INITS = ("default", "kaiming-xavier")

#: SSL4MIS's choices per dimension for the fields left ``None``.
DIM_DEFAULTS = {2: {"weight_init": "default"}, 3: {"weight_init": "kaiming-xavier"}}


@dataclass(frozen=True)
class CPSConfig:
    """Parameters of CPS (defaults: SSL4MIS ``train_cross_pseudo_supervision_2D.py`` / ``_3D.py``).

    Attributes:
        consistency: lambda, weight of the cross pseudo-supervision CE (``--consistency 0.1``).
        rampup: fraction of the stage over which lambda follows the sigmoid ramp-up (``--consistency_rampup 200``
            epochs of 150 iterations = the whole 30k schedule -> 1.0).
        sup_weight: w_s, weight of each network's CE + Dice on the labeled images (0.5).
        weight_init: one of :data:`INITS`; ``None`` = SSL4MIS's choice for the data (``default`` in 2D,
            ``kaiming-xavier`` in 3D). (Called ``init`` before arco 0.2, a name that clashed with a stage's ``init``.)
    """

    consistency: float = 0.1
    rampup: float = 1.0
    sup_weight: float = 0.5
    weight_init: str | None = None

    def __post_init__(self) -> None:
        if self.consistency < 0:
            raise ValueError(f"cps.consistency must be >= 0, got {self.consistency}")
        if self.rampup < 0:
            raise ValueError(f"cps.rampup must be >= 0, got {self.rampup}")
        if not self.sup_weight > 0:
            raise ValueError(f"cps.sup_weight must be > 0, got {self.sup_weight}")
        if self.weight_init is not None:
            choice("cps.weight_init", self.weight_init, INITS)


def init_weights(net: nn.Module, kind: str) -> nn.Module:
    """SSL4MIS's re-initialisation: ``kind`` ``kaiming`` or ``xavier`` normal on every (non-transposed)
    convolution weight, BN weight 1 and bias 0 (biases of convolutions keep their default)."""
    fn = {"kaiming": nn.init.kaiming_normal_, "xavier": nn.init.xavier_normal_}[kind]
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fn(m.weight)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


@register_method
class CPSMethod(MethodBase):
    """Two networks (``student``, ``student2``), each supervised by the other's argmax on unlabeled images.
    Predicts with ``student`` (the first network, as SSL4MIS's test script)."""

    name = "cps"
    config_class = CPSConfig
    description = "cross pseudo supervision: two differently initialised networks teach each other hard labels"
    paper = "Chen et al., Semi-Supervised Semantic Segmentation with Cross Pseudo Supervision, CVPR 2021"
    loss_names = ("loss_sup", "loss_cps")
    init_components = ("student", "student2")
    segmenter = "student"
    spatial_dims = (2, 3)

    def __init__(self, cfg: CPSConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.cfg = cfg = with_dim_defaults(cfg, spatial_dims, DIM_DEFAULTS)
        self.add_backbone("student")
        self.add_backbone("student2")
        if cfg.weight_init == "kaiming-xavier":
            init_weights(self.student, "kaiming")
            init_weights(self.student2, "xavier")
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl = batch.image_l.shape[0]
        x = torch.cat([batch.image_l, batch.image_u])
        logits1, logits2 = self.student(x).logits, self.student2(x).logits
        loss_sup = self.sup(logits1[:bl], batch.label_l) + self.sup(logits2[:bl], batch.label_l)
        u1, u2 = logits1[bl:], logits2[bl:]
        with torch.no_grad():
            pseudo1, pseudo2 = u1.argmax(dim=1), u2.argmax(dim=1)
        loss_cps = F.cross_entropy(u1.float(), pseudo2) + F.cross_entropy(u2.float(), pseudo1)
        weight = rampup_weight(self.cfg.consistency, step, self.total_steps, self.cfg.rampup)
        loss = loss_sup + weight * loss_cps
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_cps": loss_cps.detach()})
