from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arco.models import (
    MODELS,
    PredictionHead,
    ProjectionHead,
    RepresentationHead,
    SegOutput,
    ema_update,
    gather_interpolated,
    make_teacher,
)

# (name, kwargs, input shape)
CASES = [
    ("unet", {"in_channels": 1, "num_classes": 4}, (2, 1, 32, 32)),
    ("unet", {"in_channels": 2, "num_classes": 3}, (2, 2, 16, 48)),
    ("vnet", {"in_channels": 1, "num_classes": 2}, (2, 1, 16, 16, 32)),
]


@pytest.mark.parametrize("name, kwargs, shape", CASES)
def test_forward_contract(name, kwargs, shape):
    torch.manual_seed(0)
    net = MODELS.build(name, **kwargs)
    out = net(torch.randn(shape))
    assert isinstance(out, SegOutput)
    b, s = shape[0], shape[2:]
    assert out.logits.shape == (b, kwargs["num_classes"], *s)
    assert torch.isfinite(out.logits).all()
    assert [f.shape[1] for f in out.features] == net.feature_channels == [128, 64, 32, 16]
    for f, scale in zip(out.features, (8, 4, 2, 1)):
        assert tuple(f.shape[2:]) == tuple(x // scale for x in s)
    assert out.bottleneck.shape == (b, net.bottleneck_channels, *(x // 16 for x in s))
    assert net.bottleneck_channels == 256


def test_vnet_full_size_eval():
    net = MODELS.build("vnet", in_channels=1, num_classes=2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32, 32))
    assert out.logits.shape == (1, 2, 32, 32, 32)
    assert out.features[-1].shape == (1, 16, 32, 32, 32)


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        # docs/design.md: transposed-conv up gives 1,944,324; SSL4MIS's bilinear default: 1.81 M.
        ("unet", {"num_classes": 4}, 1_944_324),
        ("vnet", {"num_classes": 2}, 9_448_866),  # docs/design.md: the UA-MT VNet
    ],
)
def test_parameter_count(name, kwargs, expected):
    n = sum(p.numel() for p in MODELS.build(name, in_channels=1, **kwargs).parameters())
    assert n == expected
    assert abs(n - {"unet": 1.9e6, "vnet": 9.4e6}[name]) <= 0.05 * {"unet": 1.9e6, "vnet": 9.4e6}[name]


@pytest.mark.parametrize(
    "name, shape",
    [("unet", (1, 1, 30, 32)), ("unet", (1, 1, 32, 8)), ("vnet", (1, 1, 16, 16, 20))],
)
def test_bad_input_size(name, shape):
    net = MODELS.build(name, in_channels=1, num_classes=2)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(shape))


def test_bad_input_rank_and_args():
    with pytest.raises(ValueError, match=r"\(B, C, HW\)|shape"):
        MODELS.build("unet", in_channels=1, num_classes=2)(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="spatial_dims"):
        MODELS.build("unet", in_channels=1, num_classes=2, spatial_dims=3)
    with pytest.raises(ValueError, match="unknown model 'unte'.*did you mean 'unet'"):
        MODELS.build("unte")


def test_unet_dropout_rates():
    net = MODELS.build("unet", in_channels=1, num_classes=4)
    rates = [m.p for m in net.encoder.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.05, 0.1, 0.2, 0.3, 0.5]
    assert any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())


@pytest.mark.parametrize(
    "in_shape, out_shape",
    [
        ((2, 3, 4, 4), (16, 16)),
        ((1, 2, 5, 7), (20, 21)),
        ((2, 2, 3, 4, 5), (6, 8, 10)),
        ((1, 1, 3, 3, 3), (7, 5, 9)),
    ],
)
def test_gather_interpolated_matches_interpolate(in_shape, out_shape):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(in_shape, generator=g)
    mode = "bilinear" if len(out_shape) == 2 else "trilinear"
    dense = F.interpolate(feat, size=out_shape, mode=mode, align_corners=False)
    rows = dense.movedim(1, -1).reshape(-1, in_shape[1])
    index = torch.arange(rows.shape[0])
    torch.testing.assert_close(gather_interpolated(feat, index, out_shape), rows, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_shape, out_shape", [((2, 3, 5, 7), (12, 16)), ((2, 2, 3, 4, 5), (6, 8, 10))])
def test_gather_interpolated_gradient_matches_interpolate(in_shape, out_shape):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(in_shape, generator=g, requires_grad=True)
    twin = feat.detach().clone().requires_grad_(True)
    mode = "bilinear" if len(out_shape) == 2 else "trilinear"
    index = torch.randint(0, in_shape[0] * torch.Size(out_shape).numel(), (40,), generator=g)
    index[1] = index[0]  # a repeated point accumulates
    up = torch.randn(40, in_shape[1], generator=g)
    (gather_interpolated(feat, index, out_shape) * up).sum().backward()
    dense = F.interpolate(twin, size=out_shape, mode=mode, align_corners=False)
    (dense.movedim(1, -1).reshape(-1, in_shape[1])[index] * up).sum().backward()
    torch.testing.assert_close(feat.grad, twin.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "channels, shapes",
    [
        ([128, 64, 32, 16], [(2, 4, 6), (2, 8, 12), (2, 16, 24), (2, 32, 48)]),
        ([8, 4], [(1, 2, 4, 3), (1, 4, 8, 6)]),
    ],
)
def test_representation_head_forward_at_equals_dense(channels, shapes):
    torch.manual_seed(0)
    spatial_dims = len(shapes[0]) - 1
    head = RepresentationHead(channels, dim=24, spatial_dims=spatial_dims)
    feats = [torch.randn(s[0], c, *s[1:]) for c, s in zip(channels, shapes)]
    head.train()
    head(feats)  # move the BN running stats away from the identity
    head.eval()
    dense = head(feats)
    full = shapes[-1][1:]
    assert dense.shape == (shapes[0][0], 24, *full)
    index = torch.randperm(dense.numel() // 24)[:50]
    at = head.forward_at(feats, index, full)
    torch.testing.assert_close(at, dense.movedim(1, -1).reshape(-1, 24)[index], rtol=1e-4, atol=1e-5)


def test_representation_head_train_grad_and_errors():
    head = RepresentationHead([8, 4], dim=16)
    feats = [torch.randn(2, 8, 4, 4, requires_grad=True), torch.randn(2, 4, 8, 8, requires_grad=True)]
    out = head.forward_at(feats, torch.tensor([0, 7, 64, 127]), (8, 8))
    assert out.shape == (4, 16)
    out.square().sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    with pytest.raises(ValueError, match="channels"):
        head.forward_at(feats[::-1], torch.tensor([0, 1]), (8, 8))
    with pytest.raises(ValueError, match="spatial_dims"):
        RepresentationHead([8], spatial_dims=1)


def test_head_on_backbone_default_dim():
    net = MODELS.build("unet", in_channels=1, num_classes=4)
    head = RepresentationHead(net.feature_channels)
    out = net(torch.randn(2, 1, 32, 32))
    rep = head.forward_at(out.features, torch.randint(0, 2 * 32 * 32, (64,)), (32, 32))
    assert rep.shape == (64, 512) and torch.isfinite(rep).all()


def test_projection_and_prediction_heads():
    proj, pred = ProjectionHead(256), PredictionHead()
    z = proj(torch.randn(3, 256))
    assert z.shape == (3, 128)
    assert pred(z).shape == (3, 128)
    kinds = [type(m) for m in proj]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1))


def test_make_teacher_frozen_eval_no_grad():
    student = _tiny_net().train()
    teacher = make_teacher(student)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    x = torch.randn(2, 1, 8, 8)
    (student(x).sum() + teacher(x).sum()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_ema_update_params_and_buffers():
    torch.manual_seed(0)
    student = _tiny_net().train()
    teacher = make_teacher(student)
    student(torch.randn(4, 1, 8, 8) * 3 + 1)  # changes BN running stats and num_batches_tracked
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    s = student.state_dict()
    ema_update(teacher, student, momentum=0.9)
    for k, v in teacher.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * t0[k] + 0.1 * s[k])
            assert not torch.equal(v, t0[k]), k
        else:
            assert torch.equal(v, s[k]), k
    assert int(teacher[1].num_batches_tracked) == 1
    ema_update(teacher, student, momentum=0.0)
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, s[k])
    with pytest.raises(ValueError, match="momentum"):
        ema_update(teacher, student, momentum=1.5)
