"""Auxiliary networks of the adversarial and shape-aware baselines: the fully-convolutional discriminator of
DAN / SASSNet and the signed-distance regression head of DTC / SASSNet.

- :class:`FCDiscriminator` follows SSL4MIS ``networks/discriminator.py`` (``FCDiscriminator`` in 2D,
  ``FC3DDiscriminator`` in 3D; SASSNet's copies are the same layers): a 4x4 stride-2 convolution of the map and
  one of the image are added, then three more 4x4 stride-2 convolutions (64/128/256/512 filters for ``ndf=64``)
  with LeakyReLU(0.2) and channel dropout 0.5, an average pool and a linear layer to two logits (class 1 =
  "labeled", 0 = "unlabeled"). The originals pool with a fixed window sized for their patch (2D: ``AvgPool2d(7)`` on
  the 16x16 map of a 256x256 input, i.e. 2x2 cells; 3D: the whole 7x7x5 or 6x6x6 map); here an adaptive average
  pool to ``pool`` cells per axis keeps the same classifier width for any patch size.
- :class:`SDFHead` is DTC's ``out_conv`` + ``tanh`` (``networks/vnet_sdf.py``): a sibling of the backbone's output
  convolution on the last decoder map, one channel per foreground class.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FCDiscriminator", "SDFHead"]


class FCDiscriminator(nn.Module):
    """Discriminator on (map, image) pairs -> ``(B, 2)`` logits.

    Args:
        spatial_dims: 2 or 3.
        map_channels: channels of the map (class probabilities for DAN, SDF channels for SASSNet).
        in_channels: image channels.
        ndf: filters of the first layer (SSL4MIS / SASSNet: 64).
        pool: cells per axis of the final average pool (SSL4MIS 2D: 2, i.e. a ``8 * ndf * 4`` classifier input;
            3D and SASSNet: 1).

    Like SSL4MIS, the 3D version applies LeakyReLU and dropout right after the sum of the two input convolutions
    and the 2D version does not.
    """

    def __init__(
        self, spatial_dims: int, map_channels: int, in_channels: int = 1, ndf: int = 64, pool: int = 1
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"FCDiscriminator: spatial_dims must be 2 or 3, got {spatial_dims}")
        if min(map_channels, in_channels, ndf, pool) < 1:
            raise ValueError(
                "FCDiscriminator: map_channels, in_channels, ndf and pool must be >= 1, got "
                f"{map_channels}, {in_channels}, {ndf}, {pool}"
            )
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        drop = nn.Dropout2d if spatial_dims == 2 else nn.Dropout3d
        pooling = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.spatial_dims = spatial_dims
        self.conv0 = conv(map_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv1 = conv(in_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = conv(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = conv(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = conv(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.pool = pooling(pool)
        self.classifier = nn.Linear(ndf * 8 * pool**spatial_dims, 2)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2)
        self.dropout = drop(0.5)

    def forward(self, prediction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.conv0(prediction) + self.conv1(image)
        if self.spatial_dims == 3:
            x = self.dropout(self.leaky_relu(x))
        x = self.dropout(self.leaky_relu(self.conv2(x)))
        x = self.dropout(self.leaky_relu(self.conv3(x)))
        x = self.leaky_relu(self.conv4(x))
        return self.classifier(self.pool(x).flatten(1))


class SDFHead(nn.Module):
    """``tanh(conv(features))``: the signed-distance regression head of DTC / SASSNet.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the last decoder map.
        out_channels: foreground classes (``num_classes - 1``).
        kernel_size: that of the backbone's output convolution (UNet: 3, VNet: 1), so the two heads are siblings.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(features))
