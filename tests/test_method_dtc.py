"""DTC: the objective against an independent formula (SDF targets from DTC's scipy recipe), resume, and the CLI on
phantom2d / phantom3d."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _cli_runs import smoke
from _tiny import assert_resume_identical, build
from arco.methods import Batch, get_method
from test_losses_sdf import dtc_reference


def blob_batch(spatial_dims: int = 2, seed: int = 1) -> Batch:
    """Labels with a box of class 1 and one of class 2 (class 2 absent from the second image)."""
    g = torch.Generator().manual_seed(seed)
    s = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    label = torch.zeros(2, *s, dtype=torch.long)
    label[(slice(None), *[slice(3, 11)] * spatial_dims)] = 1
    label[(0, *[slice(12, 15)] * spatial_dims)] = 2
    return Batch(torch.randn(2, 1, *s, generator=g), label, torch.randn(2, 1, *s, generator=g))


def capture(m) -> dict:
    """Forward hooks keeping the segmentation logits and the SDF head's output of the step."""
    seen = {}

    def seg(_m, _i, out) -> None:
        seen.setdefault("logits", out.logits.detach())

    def sdf(_m, _i, out) -> None:
        seen.setdefault("sdf", out.detach())

    m.components()["student"].register_forward_hook(seg)
    m.components()["sdf_head"].register_forward_hook(sdf)
    return seen


def fg_dice(prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """DTC's ``losses.dice_loss`` on each foreground channel, averaged (written per class)."""
    losses = []
    for c in range(1, prob.shape[1]):
        p, y = prob[:, c], (label == c).float()
        losses.append(1 - (2 * (p * y).sum() + 1e-5) / ((p * p).sum() + (y * y).sum() + 1e-5))
    return torch.stack(losses).mean()


def sdf_targets(label: torch.Tensor) -> torch.Tensor:
    lab = label.numpy()
    return torch.from_numpy(np.stack([dtc_reference(lab == c) for c in (1, 2)], axis=1)).float()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_is_dice_plus_sdf_regression_plus_ramped_dual_task_consistency(spatial_dims):
    step, total = 40, 100
    m = build("dtc", spatial_dims, total)
    b = blob_batch(spatial_dims)
    seen = capture(m)
    out = m.training_step(b, step)
    prob, sdf = seen["logits"].softmax(1), seen["sdf"]
    dice = fg_dice(prob[:2], b.label_l)
    mse = ((sdf[:2] - sdf_targets(b.label_l)) ** 2).mean()
    dtc = ((torch.sigmoid(-1500 * sdf) - prob[:, 1:]) ** 2).mean()  # labeled and unlabeled images
    weight = 1.0 * math.exp(-5 * (1 - step / total) ** 2)
    assert float(out.logs["loss_dice"]) == pytest.approx(float(dice), rel=1e-5)
    assert float(out.logs["loss_sdf"]) == pytest.approx(float(mse), rel=1e-5)
    assert float(out.logs["loss_dtc"]) == pytest.approx(float(dtc), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(dice + 0.3 * mse + weight * dtc), rel=1e-5)


def test_binary_case_is_dtcs_sigmoid_head():
    """With two classes the foreground softmax is the sigmoid of the logit difference, DTC's single channel."""
    logits = torch.randn(2, 2, 8, 8)
    assert torch.allclose(logits.softmax(1)[:, 1], torch.sigmoid(logits[:, 1] - logits[:, 0]), atol=1e-6)
    m = build("dtc")
    assert m.components()["sdf_head"].conv.out_channels == 2 and m.components()["sdf_head"].conv.kernel_size == (3, 3)


def test_resume_is_bit_identical_with_the_sdf_head(tmp_path):
    assert "sdf_head" in assert_resume_identical(tmp_path, "dtc")["modules"]


def test_bad_config_values_are_named():
    cls = get_method("dtc").config_class
    with pytest.raises(ValueError, match="dtc.k"):
        cls(k=0)
    with pytest.raises(ValueError, match="dtc.rampup"):
        cls(rampup=-0.1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cli_trains_and_evaluates(tmp_path, spatial_dims):
    smoke(tmp_path, "dtc", spatial_dims, iterations=2, split="val")
