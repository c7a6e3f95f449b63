"""Extra decoders and deep-supervision heads that share a backbone's encoder (CCT, URPC, MC-Net).

- :class:`DecoderBranch`: the decoder half of a UNet/VNet (up-sampling path and output convolution) applied to
  the encoder maps of *another* backbone, so several decoders (CCT's auxiliary decoders, MC-Net's decoders with
  other up-sampling) share one encoder. It is built from a whole backbone whose encoder is dropped, so it is the
  very decoder code of :mod:`arco.models.unet` / :mod:`arco.models.vnet`.
- :class:`PyramidHeads`: URPC's per-level prediction heads on the decoder features, up-sampled to the input size.

Neither is ever a predictor: the methods evaluate the plain backbone that owns the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from arco.models.unet import SegOutput, UNet
from arco.models.vnet import VNet

__all__ = ["DecoderBranch", "PyramidHeads"]

#: Attributes holding each backbone's encoder (what a decoder branch does not keep).
_ENCODER_PARTS: dict[type, tuple[str, ...]] = {UNet: ("encoder",), VNet: ("enc", "down")}


class DecoderBranch(nn.Module):
    """The decoder of ``backbone`` (its encoder is discarded), run on encoder maps from another network.

    Args:
        backbone: a freshly built :class:`UNet` or :class:`VNet` (e.g. with another ``up_mode``); its encoder
            modules are removed, so the branch holds only decoder parameters.

    ``forward(maps)`` takes the five encoder maps of a backbone of the same width (``encode(x)``) and returns its
    :class:`SegOutput`.

    Example:
        >>> enc = UNet(1, 3)
        >>> branch = DecoderBranch(UNet(1, 3, up_mode="nearest"))
        >>> branch(enc.encode(torch.zeros(1, 1, 32, 32))).logits.shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        parts = _ENCODER_PARTS.get(type(backbone))
        if parts is None:
            raise TypeError(
                f"DecoderBranch: backbone must be a UNet or VNet, got {type(backbone).__name__}; other backbones "
                "need an entry in arco.models.multidecoder._ENCODER_PARTS"
            )
        for name in parts:
            delattr(backbone, name)
        self.net = backbone

    def forward(self, maps: list[torch.Tensor]) -> SegOutput:
        return self.net.decode(maps)


class PyramidHeads(nn.Module):
    """One convolution per decoder level giving class scores, up-sampled to the full resolution (URPC).

    Args:
        in_channels: channels of the decoder levels the heads read (coarse -> fine).
        num_classes: output classes.
        spatial_dims: 2 or 3.
        kernel_size: 3 in SSL4MIS's 2D ``Decoder_URPC``, 1 in its 3D ``UnetDsv3``.
        mode: up-sampling, ``nearest`` (2D ``F.interpolate`` default) or ``trilinear``/``bilinear`` (3D
            ``UnetDsv3``; ``align_corners=False``).

    Example:
        >>> heads = PyramidHeads([8, 4], num_classes=3, spatial_dims=2)
        >>> [o.shape[-1] for o in heads([torch.zeros(1, 8, 4, 4), torch.zeros(1, 4, 8, 8)], (16, 16))]
        [16, 16]
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        spatial_dims: int = 2,
        kernel_size: int = 3,
        mode: str = "nearest",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"PyramidHeads: spatial_dims must be 2 or 3, got {spatial_dims}")
        if mode not in ("nearest", "bilinear", "trilinear"):
            raise ValueError(f"PyramidHeads: mode must be 'nearest', 'bilinear' or 'trilinear', got {mode!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"PyramidHeads: kernel_size must be a positive odd integer, got {kernel_size}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.heads = nn.ModuleList(conv(c, num_classes, kernel_size, padding=kernel_size // 2) for c in in_channels)
        self.mode = mode

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> list[torch.Tensor]:
        """Class scores ``(B, num_classes, *size)`` of each level."""
        if len(features) != len(self.heads):
            raise ValueError(f"PyramidHeads: expected {len(self.heads)} feature maps, got {len(features)}")
        align = {} if self.mode == "nearest" else {"align_corners": False}
        return [F.interpolate(h(f), size=tuple(size), mode=self.mode, **align) for h, f in zip(self.heads, features)]
