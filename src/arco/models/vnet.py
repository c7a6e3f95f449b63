"""The 3D VNet of UA-MT / SS-Net (Yu et al.), the backbone used by ARCO on LA (SPEC §3).

16 base filters, BatchNorm, stages of 1/2/3/3/3 (3x3x3 conv, BN, ReLU), 2x2x2 strided-conv down, 2x2x2
transposed-conv up, additive skips from encoder to decoder, and ``Dropout3d(0.5)`` on the bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from arco.models.unet import SegOutput, check_divisible

__all__ = ["VNet"]


def _stage(n_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=2, stride=2),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class VNet(nn.Module):
    """UA-MT VNet (``normalization="batchnorm"``, ``has_dropout=True``) returning logits, features and
    bottleneck.

    Args:
        in_channels: image channels.
        num_classes: output classes (background included).
        n_filters: base width (16 in UA-MT / SS-Net).
        dropout: ``Dropout3d`` rate on the bottleneck (0.5; set 0 to disable).
        spatial_dims: must be 3.

    Input ``(B, in_channels, D, H, W)`` with every spatial size divisible by 16 (``ValueError`` otherwise).
    ``features`` are the four decoder stages ``128@/8, 64@/4, 32@/2, 16@/1``; ``bottleneck`` is ``256@/16``.
    About 9.45 M parameters at 2 classes.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        n_filters: int = 16,
        dropout: float = 0.5,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"VNet: spatial_dims must be 3 (use 'unet' for 2D), got {spatial_dims}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"VNet: in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        f = [n_filters * 2**i for i in range(5)]
        self.spatial_dims = 3
        self.num_classes = num_classes
        self.enc = nn.ModuleList([_stage(n, a, b) for n, a, b in zip((1, 2, 3, 3, 3), [in_channels] + f[1:], f)])
        self.down = nn.ModuleList([_down(f[i], f[i + 1]) for i in range(4)])
        self.up = nn.ModuleList([_up(f[i], f[i - 1]) for i in range(4, 0, -1)])
        self.dec = nn.ModuleList([_stage(n, f[i], f[i]) for n, i in zip((3, 3, 2, 1), (3, 2, 1, 0))])
        self.dropout = nn.Dropout3d(dropout)
        self.out_conv = nn.Conv3d(f[0], num_classes, kernel_size=1)
        self.feature_channels: list[int] = [f[3], f[2], f[1], f[0]]
        self.bottleneck_channels: int = f[4]

    def forward(self, x: torch.Tensor) -> SegOutput:
        check_divisible(x, 3, 16, "VNet")
        skips = []
        for i, stage in enumerate(self.enc):
            x = stage(x if i == 0 else self.down[i - 1](x))
            skips.append(x)
        x = bottleneck = self.dropout(x)
        features = []
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(up(x) + skip)
            features.append(x)
        return SegOutput(self.out_conv(x), features, bottleneck)
