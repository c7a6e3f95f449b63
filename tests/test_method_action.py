"""ACTION and MONA: ReCo's losses in closed form, the active sampling distribution (statistical), the fine-tuning
objective's weights, resume, the recipes through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _cli_runs import smoke
from _tiny import assert_resume_identical, params_for
from arco.methods import Batch, ModelConfig, build_method, get_recipe
from arco.methods.action import negative_classes, reco_loss, weighted_unsup_loss
from test_method_dan import _dice


def test_weighted_unsup_loss_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]], [[[0.0, 1.0]], [[1.0, 0.0]]]])  # (B=2, C=2, 1, 2)
    pseudo = torch.tensor([[[0, 1]], [[1, 1]]])
    conf = torch.tensor([[[0.99, 0.5]], [[0.98, 0.99]]])  # image 0: half confident, image 1: all
    ce = [-math.log(math.e**2 / (math.e**2 + 1)), math.log(2), -math.log(math.e / (math.e + 1)),
          -math.log(1 / (1 + math.e))]  # fmt: skip
    expected = (0.5 * ce[0] + 0.5 * ce[1] + 1.0 * ce[2] + 1.0 * ce[3]) / 4
    assert float(weighted_unsup_loss(logits, pseudo, conf, 0.97)) == pytest.approx(expected, rel=1e-6)


def _reps():
    table = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    return lambda index: table[index], table


def test_reco_loss_closed_form_with_one_pixel_per_class():
    rep, table = _reps()
    label = torch.tensor([[[0, 1, 2, 2]]])
    valid = torch.tensor([[[True, True, False, False]]])  # class 2 has no valid pixel: absent
    hard = torch.ones_like(valid)
    tau, n = 0.5, 3
    loss = reco_loss(label, valid, hard, rep, 3, num_queries=4, num_negatives=n, tau=tau,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    cos01 = float(F.cosine_similarity(table[0], table[1], dim=0))  # 0.6
    # Each query is its class's only pixel: positive cos 1; every negative is the other class's pixel.
    per_class = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + n * math.exp(cos01 / tau)))
    assert float(loss) == pytest.approx(per_class, rel=1e-6)
    # Class 0 without hard pixels gives no queries but still counts among the present classes (ReCo's divisor).
    easy0 = torch.tensor([[[False, True, True, True]]])
    loss = reco_loss(label, valid, easy0, rep, 3, num_queries=4, num_negatives=n, tau=tau)
    assert float(loss) == pytest.approx(per_class / 2, rel=1e-6)
    # A single present class: nothing to contrast.
    only = torch.tensor([[[True, False, False, False]]])
    assert float(reco_loss(label, only, hard, rep, 3, num_queries=4, num_negatives=n, tau=tau)) == 0.0


def test_active_sampling_draws_negative_classes_by_prototype_similarity():
    proto = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), dim=-1)
    present = torch.tensor([True, True, True, False])
    tau, num = 0.5, 40000
    cls = negative_classes(proto, present, num, tau, torch.Generator().manual_seed(0))
    for c in range(3):
        others = [j for j in range(3) if j != c]
        logits = torch.tensor([float(proto[c] @ proto[j]) / tau for j in others])
        expected = torch.softmax(logits, 0)
        assert not (cls[c] == c).any() and not (cls[c] == 3).any()  # never its own class, never an absent one
        for j, p in zip(others, expected.tolist()):
            freq = float((cls[c] == j).float().mean())
            z = 5.0  # fixed seed; |z| < 5 for a binomial proportion with n = 40000
            assert abs(freq - p) < z * math.sqrt(p * (1 - p) / num), (c, j, freq, p)


def test_step_weights_supervised_pseudo_label_and_contrast_terms():
    torch.manual_seed(0)
    m = build_method(
        "action-finetune", params_for("action-finetune", cutmix_p=0.0), 3, 2, ModelConfig(dim=8, hidden_dim=8)
    )
    m.setup(torch.device("cpu"), 0, 100)
    m.set_training(True)
    g = torch.Generator().manual_seed(1)
    b = Batch(torch.randn(2, 1, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g),
              torch.randn(2, 1, 32, 32, generator=g))  # fmt: skip
    seen = {}

    def student(_m, _i, out) -> None:
        seen.setdefault("logits", out.logits.detach())

    def teacher(_m, _i, out) -> None:
        seen.setdefault("teacher", out.logits.detach())

    m.components()["student"].register_forward_hook(student)
    m.components()["teacher"].register_forward_hook(teacher)
    out = m.training_step(b, 0)
    logits = seen["logits"]
    conf, pseudo = seen["teacher"].softmax(1).max(1)  # no CutMix: the strong view keeps the teacher's labels
    sup = 0.5 * (F.cross_entropy(logits[:2], b.label_l) + _dice(logits[:2].softmax(1), b.label_l))
    unsup = weighted_unsup_loss(logits[2:], pseudo, conf, 0.97)
    assert float(out.logs["loss_sup"]) == pytest.approx(float(sup), rel=1e-5)
    assert float(out.logs["loss_unsup"]) == pytest.approx(float(unsup), rel=1e-5)
    assert float(out.logs["loss_contrast"]) > 0
    expected = sup + unsup + 0.01 * out.logs["loss_contrast"]
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_resume_is_bit_identical(tmp_path):
    assert {"student", "teacher", "rep_head"} <= set(assert_resume_identical(tmp_path, "action-finetune")["modules"])


def test_recipes_are_presets_of_the_arco_stages():
    mona, arco_ns, action = get_recipe("mona"), get_recipe("arco-ns"), get_recipe("action")
    assert [(s.name, s.method, dict(s.params)) for s in mona.stages] == [
        (s.name, s.method, dict(s.params)) for s in arco_ns.stages
    ]
    assert dict(mona.stages[1].params) == {"sampler": "ns"} and "Mine yOur owN Anatomy" in mona.paper
    assert [s.method for s in action.stages] == ["arco-pretrain", "action-finetune"] and "IPMI 2023" in action.paper


ARCO_TINY = ("pretrain.queue_size=4",)


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("action", (*ARCO_TINY, "finetune.num_queries=8", "finetune.num_negatives=8")),
        ("mona", (*ARCO_TINY, "finetune.num_queries=8", "finetune.num_negatives=8", "finetune.bank_size=16",
                  "finetune.nn_bank=4", "finetune.nn_k=2")),
    ],
)  # fmt: skip
def test_cli_trains_both_stages_and_evaluates(tmp_path, method, extra):
    run = smoke(tmp_path, method, 2, extra, iterations=2, split="val").run
    config = (run / "finetune" / "config.yaml").read_text()
    assert ("sampler: ns" in config) == (method == "mona")
