"""Decoder branches sharing an encoder, URPC's pyramid heads and the feature perturbations' generator contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arco.models import MODELS
from arco.models.multidecoder import DecoderBranch, PyramidHeads
from arco.models.perturbations import feature_dropout, feature_noise, random_dropout


@pytest.mark.parametrize(("arch", "mode", "shape"), [("unet", "nearest", (2, 1, 32, 32)),
                                                     ("vnet", "trilinear", (1, 1, 16, 16, 16))])  # fmt: skip
def test_decoder_branch_is_the_backbone_decoder_without_an_encoder(arch, mode, shape):
    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 3} | ({"n_filters": 4} if arch == "vnet" else {})
    owner = MODELS.build(arch, **kw).eval()
    other = MODELS.build(arch, up_mode=mode, **kw).eval()
    reference = {k: v.clone() for k, v in other.state_dict().items()}
    branch = DecoderBranch(other).eval()
    encoder_keys = {k for k in reference if k.split(".")[0] in ("encoder", "enc", "down")}
    assert encoder_keys and set(branch.net.state_dict()) == set(reference) - encoder_keys
    maps = owner.encode(torch.randn(shape))
    out = branch(maps)
    # the same numbers as the whole backbone's decoder applied to those maps
    whole = MODELS.build(arch, up_mode=mode, **kw).eval()
    whole.load_state_dict(reference)
    assert torch.allclose(out.logits, whole.decode(maps).logits)
    assert out.logits.shape == (shape[0], 3, *shape[2:])


def test_decoder_branch_rejects_other_networks():
    with pytest.raises(TypeError, match="UNet or VNet"):
        DecoderBranch(nn.Conv2d(1, 1, 1))


def test_pyramid_heads_shapes_and_errors():
    heads = PyramidHeads([8, 4], num_classes=2, spatial_dims=3, kernel_size=1, mode="trilinear")
    out = heads([torch.randn(1, 8, 2, 2, 2), torch.randn(1, 4, 4, 4, 4)], (16, 16, 16))
    assert [tuple(o.shape) for o in out] == [(1, 2, 16, 16, 16)] * 2
    with pytest.raises(ValueError, match="expected 2 feature maps"):
        heads([torch.randn(1, 8, 2, 2, 2)], (16, 16, 16))
    with pytest.raises(ValueError, match="mode"):
        PyramidHeads([8], 2, mode="bicubic")


@pytest.mark.parametrize(
    "fn", [lambda x, g: feature_noise(x, g), lambda x, g: feature_dropout(x, g), lambda x, g: random_dropout(x, 0.3, g)]
)
def test_perturbations_repeat_with_the_generator_and_keep_dtype(fn):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) + 0.1
    a = fn(x, torch.Generator().manual_seed(7))
    b = fn(x, torch.Generator().manual_seed(7))
    c = fn(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == x.dtype


def test_perturbation_arguments_are_checked():
    x = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="p must be in"):
        random_dropout(x, 1.0)
    with pytest.raises(ValueError, match="low <= high"):
        feature_dropout(x, low=0.9, high=0.7)
    with pytest.raises(ValueError, match="uniform_range"):
        feature_noise(x, uniform_range=-1)
