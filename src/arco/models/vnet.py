"""The 3D VNet of UA-MT / SS-Net (Yu et al.), the backbone used by ARCO on LA (docs/design.md).

16 base filters, BatchNorm, stages of 1/2/3/3/3 (3x3x3 conv, BN, ReLU), 2x2x2 strided-conv down, 2x2x2
transposed-conv up, additive skips from encoder to decoder, and ``Dropout3d(0.5)`` on the bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from arco.models.unet import SegOutput, check_divisible

__all__ = ["VNet", "VNET_UP_MODES"]


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


def _up(in_channels: int, out_channels: int, up_mode: str = "transpose") -> nn.Sequential:
    if up_mode == "transpose":
        return nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )
    # MC-Net's 3D "Upsampling" block: interpolate (trilinear with align_corners=True), then a 3x3x3 convolution.
    align = {"align_corners": True} if up_mode == "trilinear" else {}
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode=up_mode, **align),
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


#: Decoder up-sampling of the VNet: transposed convolution (UA-MT), or trilinear / nearest interpolation + conv.
VNET_UP_MODES = ("transpose", "trilinear", "nearest")


class VNet(nn.Module):
    """UA-MT VNet (``normalization="batchnorm"``, ``has_dropout=True``) returning logits, features and
    bottleneck.

    Args:
        in_channels: image channels.
        num_classes: output classes (background included).
        n_filters: base width (16 in UA-MT / SS-Net).
        dropout: ``Dropout3d`` rate on the bottleneck (0.5; set 0 to disable).
        spatial_dims: must be 3.
        up_mode: decoder up-sampling, one of :data:`VNET_UP_MODES`.

    ``encode(x)`` returns the five encoder maps (bottleneck last, after its dropout) and ``decode(maps)`` the
    :class:`SegOutput`; ``forward`` is both.
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
        up_mode: str = "transpose",
    ) -> None:
        super().__init__()
        if up_mode not in VNET_UP_MODES:
            raise ValueError(f"VNet: up_mode must be one of {VNET_UP_MODES}, got {up_mode!r}")
        if spatial_dims != 3:
            raise ValueError(f"VNet: spatial_dims must be 3 (use 'unet' for 2D), got {spatial_dims}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"VNet: in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        f = [n_filters * 2**i for i in range(5)]
        self.spatial_dims = 3
        self.num_classes = num_classes
        self.enc = nn.ModuleList([_stage(n, a, b) for n, a, b in zip((1, 2, 3, 3, 3), [in_channels] + f[1:], f)])
        self.down = nn.ModuleList([_down(f[i], f[i + 1]) for i in range(4)])
        self.up = nn.ModuleList([_up(f[i], f[i - 1], up_mode) for i in range(4, 0, -1)])
        self.dec = nn.ModuleList([_stage(n, f[i], f[i]) for n, i in zip((3, 3, 2, 1), (3, 2, 1, 0))])
        self.dropout = nn.Dropout3d(dropout)
        self.out_conv = nn.Conv3d(f[0], num_classes, kernel_size=1)
        self.feature_channels: list[int] = [f[3], f[2], f[1], f[0]]
        self.bottleneck_channels: int = f[4]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder maps ``16@/1 ... 256@/16``; the last (the bottleneck) after its dropout."""
        check_divisible(x, 3, 16, "VNet")
        maps = []
        for i, stage in enumerate(self.enc):
            x = stage(x if i == 0 else self.down[i - 1](x))
            maps.append(x)
        maps[-1] = self.dropout(maps[-1])
        return maps

    def decode(self, maps: list[torch.Tensor]) -> SegOutput:
        """Decoder with additive skips on encoder maps (possibly perturbed)."""
        x = maps[-1]
        features = []
        for up, dec, skip in zip(self.up, self.dec, reversed(maps[:-1])):
            x = dec(up(x) + skip)
            features.append(x)
        return SegOutput(self.out_conv(x), features, maps[-1])

    def forward(self, x: torch.Tensor) -> SegOutput:
        return self.decode(self.encode(x))
