"""The 2D UNet of SSL4MIS (Luo et al.), the backbone used by ARCO on ACDC (docs/design.md).

Five levels with 16/32/64/128/256 channels; every block is two (3x3 conv, BN, LeakyReLU) with dropout between
the two convolutions (0.05/0.1/0.2/0.3/0.5 on the encoder, none on the decoder); max-pool down, 2x2
transposed-conv up, skip concatenation and a 3x3 output convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["SegOutput", "UNet", "check_divisible", "UP_MODES"]

#: Decoder up-sampling: 2x2 transposed convolution (SSL4MIS ``mode_upsampling=1``, the default here), or a 1x1
#: convolution followed by bilinear (2) / nearest (3) interpolation, as MC-Net's decoders differ.
UP_MODES = ("transpose", "bilinear", "nearest")

#: SSL4MIS ``UNet`` channel widths and encoder dropout rates.
UNET_CHANNELS = (16, 32, 64, 128, 256)
UNET_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)


class SegOutput(NamedTuple):
    """What every segmentation backbone returns.

    Attributes:
        logits: ``(B, num_classes, *S)`` unnormalised class scores.
        features: decoder feature maps, coarse -> fine; the last one is at full resolution ``S``.
        bottleneck: ``(B, bottleneck_channels, *S/16)`` deepest encoder map (pooled for the stage-1 global
        branch).
    """

    logits: torch.Tensor
    features: list[torch.Tensor]
    bottleneck: torch.Tensor


def check_divisible(x: torch.Tensor, spatial_dims: int, factor: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, C, *S)`` with every spatial size divisible by ``factor``."""
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"{name}: expected input of shape (B, C, {', '.join('HW' if spatial_dims == 2 else 'DHW')}), "
            f"got {tuple(x.shape)}"
        )
    if any(s % factor for s in x.shape[2:]):
        padded = tuple(-(-s // factor) * factor for s in x.shape[2:])
        raise ValueError(
            f"{name}: spatial sizes must be divisible by {factor} (four 2x down-samplings), got "
            f"{tuple(x.shape[2:])}; pad or crop the input (e.g. to {padded})"
        )


class ConvBlock(nn.Sequential):
    """(3x3 conv, BN, LeakyReLU), dropout, (3x3 conv, BN, LeakyReLU) as SSL4MIS ``ConvBlock``."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )


class UpBlock(nn.Module):
    """Up-sample (``up_mode``), concatenate the skip, then a ``ConvBlock`` (SSL4MIS ``UpBlock``)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, up_mode: str = "transpose") -> None:
        super().__init__()
        if up_mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        else:
            align = {"align_corners": True} if up_mode == "bilinear" else {}
            self.up = nn.Sequential(
                nn.Conv2d(in_channels, skip_channels, kernel_size=1),
                nn.Upsample(scale_factor=2, mode=up_mode, **align),
            )
        self.conv = ConvBlock(2 * skip_channels, out_channels, dropout=0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """SSL4MIS 2D UNet returning logits, decoder features and the bottleneck.

    Args:
        in_channels: image channels.
        num_classes: output classes (background included).
        spatial_dims: must be 2 (accepted for symmetry with the 3D backbone).
        up_mode: decoder up-sampling, one of :data:`UP_MODES` (``transpose`` by default).

    ``encode(x)`` returns the five encoder maps (the last is the bottleneck) and ``decode(maps)`` the
    :class:`SegOutput`, so methods can perturb encoder features or attach extra decoders; ``forward`` is both.
    Input ``(B, in_channels, H, W)`` with ``H`` and ``W`` divisible by 16 (``ValueError`` otherwise).
    ``features`` are the four decoder outputs ``128@/8, 64@/4, 32@/2, 16@/1``; ``bottleneck`` is ``256@/16``.
    About 1.94 M parameters at 4 classes (SSL4MIS with its default bilinear up-sampling has 1.81 M).

    Example:
        >>> out = UNet(1, 4)(torch.zeros(2, 1, 32, 32))
        >>> tuple(out.logits.shape), [f.shape[1] for f in out.features]
        ((2, 4, 32, 32), [128, 64, 32, 16])
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 4, spatial_dims: int = 2, up_mode: str = "transpose"
    ) -> None:
        super().__init__()
        if up_mode not in UP_MODES:
            raise ValueError(f"UNet: up_mode must be one of {UP_MODES}, got {up_mode!r}")
        if spatial_dims != 2:
            raise ValueError(f"UNet: spatial_dims must be 2 (use 'vnet' for 3D), got {spatial_dims}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"UNet: in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        ch, dp = UNET_CHANNELS, UNET_DROPOUT
        self.spatial_dims = 2
        self.num_classes = num_classes
        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels, ch[0], dp[0])] + [ConvBlock(ch[i - 1], ch[i], dp[i]) for i in range(1, 5)]
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList([UpBlock(ch[i], ch[i - 1], ch[i - 1], up_mode) for i in range(4, 0, -1)])
        self.out_conv = nn.Conv2d(ch[0], num_classes, kernel_size=3, padding=1)
        self.feature_channels: list[int] = [ch[3], ch[2], ch[1], ch[0]]
        self.bottleneck_channels: int = ch[4]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder maps ``16@/1 ... 256@/16``; the last is the bottleneck."""
        check_divisible(x, 2, 16, "UNet")
        maps = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            maps.append(x)
        return maps

    def decode(self, maps: list[torch.Tensor]) -> SegOutput:
        """Decoder on encoder maps (possibly perturbed): logits, the four decoder maps and the bottleneck."""
        x = maps[-1]
        features = []
        for up, skip in zip(self.decoder, reversed(maps[:-1])):
            x = up(x, skip)
            features.append(x)
        return SegOutput(self.out_conv(x), features, maps[-1])

    def forward(self, x: torch.Tensor) -> SegOutput:
        return self.decode(self.encode(x))
