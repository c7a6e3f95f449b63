"""GCL: contrastive learning of global and local features (Chaitanya et al., NeurIPS 2020; the ARCO paper's
reference [50]), as the recipe ``gcl`` = ``gcl-global`` -> ``gcl-local`` -> ``gcl-finetune``
(krishnabits001/domain_specific_cl ``train_model/pretrain_and_fine_tune_script.sh``: G^D, then L^R, then
fine-tuning).

1. ``gcl-global`` pre-trains the encoder ``e`` with a head ``g1`` (dense 1024-ReLU-128, no biases) on every
   training image (labels unused): view 1 is the image as loaded, view 2 a random crop resized back plus random
   brightness/contrast (the code's G^D batch: an image and one augmented version). Global loss G^D with ``S = 4``
   partitions: a 2D slice's partition is ``floor(S * k / n)`` for slice ``k`` of a volume of ``n`` slices
   (the datasets pass ``Batch.position_*`` = ``k / n``); slices of one partition, and their views, are
   positives, slices of other partitions negatives. Data without slice positions falls back to G^R (one group
   per image: only its own augmented view is positive).
2. ``gcl-local`` freezes the encoder and pre-trains the first decoder blocks up to the 1/4-resolution map (64
   channels, as the code's 3 decoder blocks of its 6-level network) with a head ``g2`` (two 1x1 convolutions) and
   a linear map of each 3x3 region to 128-d, by the local loss L^R on two brightness/contrast views of each image:
   13 regions, the same region of the other view positive, every other region of both views negative.
3. ``gcl-finetune`` is the ``supervised`` baseline initialised from the pre-trained encoder and decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arco.augment import color_jitter, uniform
from arco.losses.gcl import global_contrastive_loss, local_contrastive_loss, local_regions, region_corners
from arco.methods.base import Batch, ModelConfig, StepOutput, StudentMethod
from arco.methods.registry import RecipeStage, register_method, register_recipe
from arco.methods.supervised import SupervisedMethod

__all__ = ["GclGlobalConfig", "GclLocalConfig", "GclGlobalMethod", "GclLocalMethod", "GclFinetuneMethod"]

_PAPER = (
    "Chaitanya et al., Contrastive learning of global and local features for medical image segmentation with "
    "limited annotations, NeurIPS 2020"
)


@dataclass(frozen=True)
class GclGlobalConfig:
    """Stage 1 (``pretr_encoder_global_contrastive_loss.py`` defaults).

    Attributes:
        partitions: ``S``, partitions per volume (``--n_parts 4``).
        tau: temperature (``--temp_fac 0.1``).
        head_grid: the bottleneck is average-pooled to ``head_grid x head_grid`` cells before ``g1`` flattens it
            (the code flattens its 6x6 bottleneck of a 192x192 input; pooling keeps ``g1``'s size fixed for any
            patch).
        hidden_dim / embed_dim: ``g1`` widths (1024, 128).
        crop_fraction: side of the random crop, as a fraction of the image (``--bbox_dim 100`` of 192).
        crop_start: range of the crop's top-left corner per axis, as fractions (the code's [10, 70) of 192).
        brightness / contrast: additive brightness in ``[-b, b]`` and contrast factor in ``[1 - c, 1 + c]``
            (``brit_cont_net``: 0.3 and [0.7, 1.3]).
    """

    partitions: int = 4
    tau: float = 0.1
    head_grid: int = 6
    hidden_dim: int = 1024
    embed_dim: int = 128
    crop_fraction: float = 100 / 192
    crop_start: tuple[float, float] = (10 / 192, 70 / 192)
    brightness: float = 0.3
    contrast: float = 0.3

    def __post_init__(self) -> None:
        if min(self.partitions, self.head_grid, self.hidden_dim, self.embed_dim) < 1 or not self.tau > 0:
            raise ValueError(
                "gcl-global: partitions, head_grid, hidden_dim, embed_dim must be >= 1 and tau > 0, got "
                f"{self.partitions}, {self.head_grid}, {self.hidden_dim}, {self.embed_dim}, tau={self.tau}"
            )
        lo, hi = self.crop_start
        if not (0 < self.crop_fraction <= 1 and 0 <= lo <= hi and hi + self.crop_fraction <= 1 + 1e-9):
            raise ValueError(
                "gcl-global: crop_fraction must be in (0, 1] and crop_start a range [lo, hi] with "
                f"hi + crop_fraction <= 1, got {self.crop_fraction} and {self.crop_start}"
            )
        if self.brightness < 0 or not 0 <= self.contrast < 1:
            raise ValueError(f"gcl-global: brightness >= 0, contrast in [0, 1); got {self.brightness}, {self.contrast}")


@dataclass(frozen=True)
class GclLocalConfig:
    """Stage 2 (``pretr_decoder_local_contrastive_loss.py`` as run by the authors' script).

    Attributes:
        tau: temperature (0.1).
        decoder_level: index of the decoder map the loss uses (0 = 1/8, 1 = 1/4, 2 = 1/2, 3 = full resolution);
            1, the 64-channel 1/4 map, as the code's 3 decoder blocks.
        embed_dim: width of each region's embedding (the code's ``seg_pred`` dense layer, 128).
        brightness / contrast: the intensity augmentation of both views (0.3, [0.7, 1.3]).
    """

    tau: float = 0.1
    decoder_level: int = 1
    embed_dim: int = 128
    brightness: float = 0.3
    contrast: float = 0.3

    def __post_init__(self) -> None:
        if not self.tau > 0 or self.embed_dim < 1 or self.decoder_level not in (0, 1, 2, 3):
            raise ValueError(
                "gcl-local: tau > 0, embed_dim >= 1 and decoder_level in 0..3 expected, got "
                f"{self.tau}, {self.embed_dim}, {self.decoder_level}"
            )
        if self.brightness < 0 or not 0 <= self.contrast < 1:
            raise ValueError(f"gcl-local: brightness >= 0, contrast in [0, 1); got {self.brightness}, {self.contrast}")


def _intensity(x: torch.Tensor, cfg, generator: torch.Generator) -> torch.Tensor:
    """Random brightness then contrast about the mean (``brit_cont_net``), every image."""
    return color_jitter(x, generator, brightness=cfg.brightness, contrast=cfg.contrast, gamma=(1.0, 1.0), p=1.0)


def _crop_resize(x: torch.Tensor, fraction: float, start: tuple[float, float], generator) -> torch.Tensor:
    """A random square crop of side ``fraction`` per image, resized back to the full size (bilinear)."""
    b = x.shape[0]
    corner = start[0] + (start[1] - start[0]) * uniform(2 * b, generator, x.device).view(b, 2)  # (y, x) fractions
    centre = 2 * (corner + fraction / 2) - 1  # normalised [-1, 1] coordinates
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = fraction
    theta[:, 0, 2], theta[:, 1, 2] = centre[:, 1], centre[:, 0]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _groups(batch: Batch, n: int, partitions: int, device: torch.device) -> torch.Tensor:
    """Partition ids ``floor(S * position)`` when the batch knows slice positions, else one id per image (G^R)."""
    if batch.position_l is None or batch.position_u is None:
        return torch.arange(n, device=device)
    pos = torch.cat([batch.position_l, batch.position_u]).to(device)
    return (pos * partitions).floor().long().clamp(0, partitions - 1)


class _GlobalHead(nn.Sequential):
    """``g1``: pool to a grid, flatten, dense-ReLU-dense without biases."""

    def __init__(self, channels: int, grid: int, hidden: int, out: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Linear(channels * grid * grid, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, out, bias=False),
        )


class _LocalHead(nn.Module):
    """``g2`` (1x1 conv-BN-ReLU, 1x1 conv, no biases), then each 3x3 region flattened and mapped to ``out``."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.g2 = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.project = nn.Linear(9 * channels, out, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = self.g2(features)
        corners = region_corners(f.shape[2], f.shape[3], 3)
        return self.project(local_regions(f, corners, 3))  # (N, 13, out)


def _freeze(*modules: nn.Module) -> None:
    for m in modules:
        m.requires_grad_(False)


@register_method
class GclGlobalMethod(StudentMethod):
    """Stage 1: the encoder and ``g1`` by the global contrastive loss (G^D, or G^R without slice positions)."""

    name = "gcl-global"
    config_class = GclGlobalConfig
    description = "GCL stage 1: encoder pre-training by the global contrastive loss over volume partitions (G^D)"
    paper = _PAPER
    loss_names = ("loss_global",)
    metric_names = ("positives",)
    spatial_dims = (2,)

    def __init__(self, cfg: GclGlobalConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        _freeze(self.student.decoder, self.student.out_conv)  # only the encoder is pre-trained here
        head = _GlobalHead(self.student.bottleneck_channels, cfg.head_grid, cfg.hidden_dim, cfg.embed_dim)
        self.add_component("global_head", head)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg = self.cfg
        x = torch.cat([batch.image_l, batch.image_u])
        n = x.shape[0]
        view = _intensity(_crop_resize(x, cfg.crop_fraction, cfg.crop_start, self.generator), cfg, self.generator)
        z = self.global_head(self.student.encode(torch.cat([x, view]))[-1])
        group = _groups(batch, n, cfg.partitions, x.device).repeat(2)
        loss = global_contrastive_loss(z, group, cfg.tau)
        same = group[:, None] == group[None, :]
        positives = same.sum(1).float().mean() - 1  # positives per anchor (1 under G^R)
        return StepOutput(loss, {"loss_global": loss.detach(), "positives": positives})


@register_method
class GclLocalMethod(StudentMethod):
    """Stage 2: the first decoder blocks and ``g2`` by the local contrastive loss (L^R), the encoder frozen."""

    name = "gcl-local"
    config_class = GclLocalConfig
    description = "GCL stage 2: decoder pre-training by the local contrastive loss (L^R), encoder frozen"
    paper = _PAPER
    loss_names = ("loss_local",)
    spatial_dims = (2,)

    def __init__(self, cfg: GclLocalConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        level = cfg.decoder_level
        _freeze(self.student.encoder, self.student.decoder[level + 1 :], self.student.out_conv)
        channels = self.student.feature_channels[level]
        self.add_component("local_head", _LocalHead(channels, cfg.embed_dim))

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, g = self.cfg, self.generator
        x = torch.cat([batch.image_l, batch.image_u])
        n = x.shape[0]
        with torch.no_grad():  # frozen encoder (its BatchNorm still normalises with batch statistics)
            maps = self.student.encode(torch.cat([_intensity(x, cfg, g), _intensity(x, cfg, g)]))
        feat = maps[-1]
        for up, skip in zip(self.student.decoder[: cfg.decoder_level + 1], reversed(maps[:-1])):
            feat = up(feat, skip)
        e = self.local_head(feat)
        loss = local_contrastive_loss(e[:n], e[n:], cfg.tau)
        return StepOutput(loss, {"loss_local": loss.detach()})


@register_method
class GclFinetuneMethod(SupervisedMethod):
    """Stage 3: supervised fine-tuning on the labeled images, initialised from the pre-trained encoder and
    decoder (the ``supervised`` method under its own stage name)."""

    name = "gcl-finetune"
    description = "GCL stage 3: supervised fine-tuning from the contrastively pre-trained encoder and decoder"
    paper = _PAPER


register_recipe(
    "gcl",
    (
        RecipeStage("global", "gcl-global", 1 / 3),
        RecipeStage("local", "gcl-local", 1 / 3),
        RecipeStage("finetune", "gcl-finetune", 1 / 3),
    ),
    "GCL: global (G^D) then local (L^R) contrastive pre-training, then supervised fine-tuning",
    _PAPER,
)
