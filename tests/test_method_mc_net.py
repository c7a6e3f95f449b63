"""MC-Net: sharpening and mutual consistency by hand, decoders' up-sampling, the objective with its gradients, CLI
smoke (2D, 3D), resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _cli_runs import smoke
from _multinet import (
    Capture,
    assert_same_gradients,
    dice_ref,
    sigmoid_ramp,
)
from _tiny import assert_resume_identical
from arco.methods import Batch, ModelConfig, build_method
from arco.methods.mc_net import MCNetConfig, mutual_consistency, sharpen_elementwise


def test_sharpening_by_hand():
    p = torch.tensor([0.5, 0.6, 0.9, 0.0, 1.0])
    expected = [0.5, 0.6**10 / (0.6**10 + 0.4**10), 0.9**10 / (0.9**10 + 0.1**10), 0.0, 1.0]
    assert sharpen_elementwise(p, 0.1).tolist() == pytest.approx(expected, rel=1e-6)


def test_mutual_consistency_by_hand_two_decoders_one_pixel():
    p1 = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1)
    p2 = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1)
    s = lambda a: a**10 / (a**10 + (1 - a) ** 10)  # noqa: E731
    # (p1 vs s(p2)) + (p2 vs s(p1)), each the mean over the two classes
    e12 = ((0.6 - s(0.2)) ** 2 + (0.4 - s(0.8)) ** 2) / 2
    e21 = ((0.2 - s(0.6)) ** 2 + (0.8 - s(0.4)) ** 2) / 2
    assert float(mutual_consistency([p1, p2], 0.1)) == pytest.approx(e12 + e21, rel=1e-6)


@pytest.mark.parametrize(("dims", "n", "ups"), [(2, 2, ("bilinear", "transpose")),
                                                (2, 3, ("bilinear", "transpose", "nearest")),
                                                (3, 2, ("transpose", "trilinear"))])  # fmt: skip
def test_decoders_differ_in_up_sampling_as_mc_net(dims, n, ups):
    model = ModelConfig(arch="unet" if dims == 2 else "vnet", n_filters=4)
    m = build_method("mc-net", MCNetConfig(num_decoders=n), 3, dims, model)
    assert m.segmentation_spec()["kwargs"]["up_mode"] == ups[0]
    nets = [m.student, *(d.net for d in m.decoders)]
    kinds = []
    for net in nets:
        up = net.decoder[0].up if dims == 2 else net.up[0]
        transposed = any(isinstance(x, (nn.ConvTranspose2d, nn.ConvTranspose3d)) for x in up.modules())
        modes = [x.mode for x in up.modules() if isinstance(x, nn.Upsample)]
        kinds.append("transpose" if transposed else modes[0])
    assert tuple(kinds) == ups
    assert all(not hasattr(d.net, "encoder") and not hasattr(d.net, "enc") for d in m.decoders)  # one encoder
    assert m.cfg.consistency == (0.1 if dims == 2 else 1.0) and m.cfg.rampup == (1.0 if dims == 2 else 0.4)


@pytest.mark.parametrize("n", [2, 3])
def test_objective_value_and_gradients(n):
    torch.manual_seed(0)
    m = build_method("mc-net", MCNetConfig(num_decoders=n), 3, 2, ModelConfig(arch="unet"))
    m.setup(torch.device("cpu"), 0, 100)
    m.set_training(True)
    caps = [Capture(m.student.out_conv), *(Capture(d) for d in m.decoders)]
    g = torch.Generator().manual_seed(4)
    b = Batch(torch.randn(2, 1, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g),
              torch.randn(2, 1, 32, 32, generator=g))  # fmt: skip
    out = m.training_step(b, 25)
    logits = [caps[0].outputs[0], *(c.outputs[0].logits for c in caps[1:])]
    probs = [lg.softmax(1) for lg in logits]
    sharp = [p**10 / (p**10 + (1 - p) ** 10) for p in probs]
    cons = sum(((probs[i] - sharp[j]) ** 2).mean() for i in range(n) for j in range(n) if i != j)
    sup = 0.5 * sum(dice_ref(lg[:2], b.label_l) for lg in logits)  # Dice only: the code adds no CE
    expected = sup + 0.1 * sigmoid_ramp(25, 100, 1.0) * cons
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # the pseudo-labels are not detached in the official code: gradients flow through both sides
    params = [p for name in ("student", "decoders") for p in m.components()[name].parameters()]
    assert_same_gradients(out.loss, expected, params)


def test_cli_smoke_2d(tmp_path):
    state = smoke(tmp_path, "mc-net", 2).state
    assert state["predictor"]["kwargs"]["up_mode"] == "bilinear"
    assert "decoders" in state["modules"]


def test_cli_smoke_3d_mc_net_plus(tmp_path):
    state = smoke(tmp_path, "mc-net", 3, ("mc-net.num_decoders=3",)).state
    assert len({k.split(".")[0] for k in state["modules"]["decoders"]}) == 2


def test_resume_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "mc-net")
