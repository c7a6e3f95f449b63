"""CCT: SSL4MIS's perturbations, the objective (value and stop-gradient on the main decoder), CLI smoke, resume."""

from __future__ import annotations

import math

import pytest
import torch

from _cli_runs import smoke
from _multinet import Capture, assert_same_gradients, sigmoid_ramp, sup_ref
from _tiny import assert_resume_identical
from arco.methods import Batch, ModelConfig, build_method
from arco.methods.cct import CCTConfig
from arco.models.perturbations import feature_dropout, feature_noise, random_dropout


def test_feature_noise_is_multiplicative_uniform_shared_by_the_batch():
    x = torch.rand(3, 4, 8, 8) + 0.5
    y = feature_noise(x, torch.Generator().manual_seed(1), uniform_range=0.3)
    ratio = y / x - 1
    assert torch.allclose(ratio[0], ratio[1], atol=1e-6) and torch.allclose(ratio[0], ratio[2], atol=1e-6)
    assert float(ratio.abs().max()) <= 0.3 and float(ratio.abs().max()) > 0.25  # 256 draws fill the range


def test_feature_dropout_drops_the_most_activated_positions_by_hand():
    # channel means per position: [[1, 5], [2, 10]] in item 0, [[4, 4], [4, 4]] in item 1
    x = torch.tensor([[[[1.0, 5.0], [2.0, 10.0]], [[1.0, 5.0], [2.0, 10.0]]], [[[4.0, 4.0], [4.0, 4.0]]] * 2])
    y = feature_dropout(x, torch.Generator().manual_seed(0), low=0.7, high=0.9)
    # item 0: threshold in [7, 9] keeps 1, 5, 2 and drops 10; item 1: every position equals its max -> all dropped
    assert y[0, :, 1, 1].eq(0).all() and torch.equal(y[0, :, 0, 0], x[0, :, 0, 0]) and y[0, :, 0, 1].ne(0).all()
    assert y[1].eq(0).all()


def test_random_dropout_rate_and_scale():
    x = torch.ones(1, 1, 100, 100)
    y = random_dropout(x, 0.3, torch.Generator().manual_seed(0))
    n = x.numel()
    kept = float((y > 0).float().mean())
    # binomial proportion: standard error sqrt(p(1-p)/n); z = 5
    assert abs(kept - 0.7) < 5 * math.sqrt(0.21 / n)
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / 0.7))


def _step(step: int = 30, total: int = 100, **over):
    torch.manual_seed(0)
    m = build_method("cct", CCTConfig(**over), 3, 2, ModelConfig(arch="unet"))
    m.setup(torch.device("cpu"), 0, total)
    m.set_training(True)
    main = Capture(m.student.out_conv)
    aux = [Capture(d) for d in m.aux_decoders]
    g = torch.Generator().manual_seed(2)
    b = Batch(torch.randn(2, 1, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g),
              torch.randn(2, 1, 32, 32, generator=g))  # fmt: skip
    out = m.training_step(b, step)
    return m, b, out, main.outputs[0], [a.outputs[0].logits for a in aux]


def test_objective_value_and_main_decoder_as_a_detached_target():
    m, b, out, main, aux = _step()
    decoders = [main, *aux]
    sup = sum(sup_ref(d[:2], b.label_l) for d in decoders) / 4
    target = main[2:].detach().softmax(1)
    cons = sum(((a[2:].softmax(1) - target) ** 2).mean() for a in aux) / 3
    w = 0.1 * sigmoid_ramp(30, 100, 1.0)
    expected = sup + w * cons
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    params = [p for n in ("student", "aux_decoders") for p in m.components()[n].parameters()]
    assert_same_gradients(out.loss, expected, params)
    # the consistency reaches the encoder and the auxiliary decoders, never the main decoder
    main_params = list(m.student.decoder.parameters()) + list(m.student.out_conv.parameters())
    assert_same_gradients(out.loss, sup, main_params, atol=1e-7)
    enc = list(m.student.encoder.parameters())
    with pytest.raises(AssertionError, match="gradients differ"):
        assert_same_gradients(out.loss, sup, enc, atol=1e-7)


def test_each_auxiliary_decoder_sees_its_own_perturbation():
    m = build_method("cct", CCTConfig(), 3, 2, ModelConfig(arch="unet"))
    m.setup(torch.device("cpu"), 0, 10)
    maps = [torch.rand(2, 4, 8, 8) + 1.0]
    noise, drop, fdrop = (p[0] for p in m.perturb(maps))
    assert bool((noise != maps[0]).all()) and bool((noise > 0).all())  # multiplicative noise keeps the sign
    assert 0.15 < float((drop == 0).float().mean()) < 0.45  # dropout p = 0.3
    assert bool(((fdrop == 0).all(dim=1) | (fdrop == maps[0]).all(dim=1)).all())  # whole positions dropped


def test_cli_smoke_2d(tmp_path):
    state = smoke(tmp_path, "cct", 2).state
    assert {"student", "aux_decoders"} <= set(state["modules"])
    assert not any(k.startswith("0.net.encoder") for k in state["modules"]["aux_decoders"])  # decoders only


def test_resume_bit_identical(tmp_path):
    assert_resume_identical(tmp_path, "cct")
