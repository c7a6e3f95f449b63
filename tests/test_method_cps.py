"""CPS: the objective on fixed network outputs, SSL4MIS's initialisations, CLI smoke (2D, 3D), resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _cli_runs import smoke
from _multinet import sigmoid_ramp, sup_ref
from _tiny import assert_resume_identical
from arco.methods import Batch, ModelConfig, build_method
from arco.methods.cps import CPSConfig
from arco.models import SegOutput


class Fixed(nn.Module):
    """A 'network' whose logits are a parameter (the step's objective is then a function of known numbers)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> SegOutput:
        return SegOutput(self.logits, [], self.logits)


def _method(**over):
    m = build_method("cps", CPSConfig(**over), 3, 2, ModelConfig(arch="unet"))
    m.setup(torch.device("cpu"), 0, total_steps=100)
    return m


def test_objective_is_supervision_plus_each_network_on_the_others_argmax():
    g = torch.Generator().manual_seed(0)
    l1, l2 = torch.randn(4, 3, 2, 3, generator=g), torch.randn(4, 3, 2, 3, generator=g)
    label = torch.randint(0, 3, (2, 2, 3), generator=g)
    batch = Batch(torch.zeros(2, 1, 2, 3), label, torch.zeros(2, 1, 2, 3))
    m = _method()
    m.bind_replicas({"student": Fixed(l1), "student2": Fixed(l2)})  # the method calls these in place of its networks
    out = m.training_step(batch, 50)
    w = 0.1 * sigmoid_ramp(50, 100, 1.0)
    assert w == pytest.approx(0.1 * math.exp(-1.25))
    cps = F.cross_entropy(l1[2:], l2[2:].argmax(1)) + F.cross_entropy(l2[2:], l1[2:].argmax(1))
    expected = sup_ref(l1[:2], label) + sup_ref(l2[:2], label) + w * cps
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(out.logs["loss_cps"]) == pytest.approx(float(cps), rel=1e-5)
    # each network's own argmax would give a different (smaller) value: the test tells the two apart
    own = F.cross_entropy(l1[2:], l1[2:].argmax(1)) + F.cross_entropy(l2[2:], l2[2:].argmax(1))
    assert abs(float(own - cps)) > 1e-3


@pytest.mark.parametrize(("dims", "init"), [(2, "default"), (3, "kaiming-xavier")])
def test_initialisation_follows_ssl4mis_per_dimension(dims, init):
    model = ModelConfig(arch="unet" if dims == 2 else "vnet", n_filters=8)
    torch.manual_seed(0)
    m = build_method("cps", CPSConfig(), 2, dims, model)
    assert m.cfg.weight_init == init
    a, b = m.components()["student"], m.components()["student2"]
    assert not torch.equal(next(a.parameters()), next(b.parameters()))  # differently initialised
    if dims == 3:
        conv = nn.Conv3d
        for net, gain in ((a, "kaiming"), (b, "xavier")):
            z = []
            for mod in net.modules():
                if isinstance(mod, conv):
                    fan_in = mod.weight[0].numel()
                    fan_out = mod.weight.shape[0] * mod.weight[0, 0].numel()
                    std = math.sqrt(2 / fan_in) if gain == "kaiming" else math.sqrt(2 / (fan_in + fan_out))
                    z.append((mod.weight.detach() / std).flatten())
                elif isinstance(mod, nn.BatchNorm3d):
                    assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
            z = torch.cat(z)
            # var(z) = 1 for the intended init; its standard error is sqrt(2 / n): allow 6 of them
            assert abs(float(z.var()) - 1) < 6 * math.sqrt(2 / z.numel()), (gain, float(z.var()), z.numel())


def test_bad_init_is_named():
    with pytest.raises(ValueError, match="cps.weight_init"):
        CPSConfig(weight_init="xavier")


def test_the_old_parameter_name_init_reads_as_weight_init():
    from arco.config import build_config, load_config

    raw = {"method": "cps", "stages": [{"name": "cps", "method": "cps", "params": {"init": "kaiming-xavier"}}]}
    assert build_config(raw).stage("cps").params.weight_init == "kaiming-xavier"
    assert load_config("demo", ["cps.params.init=default"], method="cps").stage("cps").params.weight_init == "default"


def test_cli_smoke_2d(tmp_path):
    state = smoke(tmp_path, "cps", 2).state
    assert {"student", "student2"} <= set(state["modules"])


def test_cli_smoke_3d(tmp_path):
    smoke(tmp_path, "cps", 3)


def test_resume_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "cps")
