"""The reference code's L_contrast (arco.losses.hard_negative): masks, banks and a hand-worked value.

The hand-worked batch (3 classes, two 1x4 images, the first labeled) is built so that every key a class can draw
from its bank has the same cosine with that class's anchors: the loss then has one exact value whatever negatives
the sampler draws, and every rule of the loss moves it:

- labeled row  ``y = [0, 1, 2, 0]``, teacher keys ``l0 = e0, l1 = (.6, .8, 0), l2 = (.6, 0, .8), l3 = e0``;
- unlabeled row pseudo-labels ``[1, 1, 2, 0]``, entropies ``[.1, .5, .9, 1.0]``, keys ``u0 = e1, u1 = e2, u2 = e2,
  u3 = e1``; with α = 25 % the low-entropy set is ``{u0}`` and the high-entropy set ``{u3}``;
- teacher probabilities: every pixel below δ_n (0.97); ``p_y > 0.3`` except at ``l1`` (0.25): l1 is a candidate
  (it enters class 1's positive) but no anchor;
- the student's representation of an anchor of class c is ``e_c``.

Candidates: class 0 {l0, l3}, class 1 {l1, u0}, class 2 {l2}; anchors: {l0, l3}, {u0}, {l2}. Positives (mean
teacher keys): e0; (.3, .9, 0); (.6, 0, .8). Banks (intended rule, pushed before the draws): class 0 {l1, l2},
class 1 {l0, l2, l3}, class 2 {l0, l1, l3, u3} (u3's least likely class is 2). Cosines anchor-positive: 1,
.9/sqrt(.9), .8; anchor-negative: .6 for every key of bank 0, 0 for banks 1 and 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arco.losses.banks import ClassBanks
from arco.losses.hard_negative import HardNegativeContrastiveLoss, class_ranks, contrast_masks, entropy_masks

TAU, NEG = 0.5, 6
LABEL = torch.tensor([[[0, 1, 2, 0]], [[1, 1, 2, 0]]])  # (B=2, 1, 4)
ENTROPY = torch.tensor([[[0.1, 0.5, 0.9, 1.0]]])
KEYS = torch.tensor(
    [[1, 0, 0], [0.6, 0.8, 0], [0.6, 0, 0.8], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0]]
)  # the 8 pixels in raster order: l0..l3, u0..u3
PROB = torch.tensor(
    [
        [0.6, 0.3, 0.1],  # l0: y 0
        [0.45, 0.25, 0.3],  # l1: y 1, p_1 = 0.25 < δ_p: a candidate, not an anchor
        [0.1, 0.3, 0.6],  # l2: y 2
        [0.6, 0.3, 0.1],  # l3: y 0
        [0.2, 0.7, 0.1],  # u0: pseudo 1, low entropy
        [0.2, 0.7, 0.1],  # u1: pseudo 1, entropy .5: neither low nor high
        [0.1, 0.2, 0.7],  # u2
        [0.5, 0.3, 0.2],  # u3: pseudo 0, high entropy; class 2 ranks last
    ]
)


def _prob() -> torch.Tensor:
    return PROB.view(2, 4, 3).movedim(-1, 1).unsqueeze(2)  # (B, C, 1, 4)


def _teacher_map() -> torch.Tensor:
    return KEYS.view(2, 4, 3).movedim(-1, 1).unsqueeze(2)  # (B, dim, 1, 4)


def _student(index: torch.Tensor) -> torch.Tensor:
    return F.one_hot(LABEL.reshape(-1)[index], 3).float()


def _loss(rule: str = "intended", **kw) -> tuple[torch.Tensor, HardNegativeContrastiveLoss]:
    fn = HardNegativeContrastiveLoss(
        3, 3, strategy=kw.pop("strategy", "sg"), num_queries=4, num_negatives=NEG, tau=TAU, capacities=8, rule=rule,
        **kw,
    )  # fmt: skip
    fn.alpha0 = 25.0  # α = 25 % at progress 0
    loss = fn(LABEL, 1, _prob(), ENTROPY, 0.0, _teacher_map(), _student, torch.Generator().manual_seed(0))
    return loss, fn


def _ce(pos: float, neg: float) -> float:
    return math.log(math.exp(pos / TAU) + NEG * math.exp(neg / TAU)) - pos / TAU


def test_hand_worked_value_and_bank_contents():
    loss, fn = _loss()
    cos1 = 0.9 / math.sqrt(0.9)
    expected = (_ce(1.0, 0.6) + _ce(cos1, 0.0) + _ce(0.8, 0.0)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    banks = fn.banks
    assert banks.count.tolist() == [2, 3, 4]
    unit = F.normalize(KEYS, dim=-1)
    for c, pixels in enumerate(([1, 2], [0, 2, 3], [0, 1, 3, 7])):  # in raster order, oldest first
        rows = banks.physical(torch.full((len(pixels),), c), torch.arange(len(pixels)))
        torch.testing.assert_close(banks.table()[rows], unit[pixels])


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (dict(alpha0=60.0), "anchors outside the entropy percentile: u1 becomes a class-1 candidate"),
        (dict(delta_p=0.65), "anchors need p_c > delta_p: classes 0 and 2 lose theirs"),
        (dict(ranks=(1, 20)), "another negative rank window puts u3 in bank 1 too"),
    ],
)
def test_each_rule_moves_the_value(change, why):
    base, _ = _loss()
    alpha = change.pop("alpha0", None)
    fn = HardNegativeContrastiveLoss(3, 3, num_queries=4, num_negatives=NEG, tau=TAU, capacities=8, **change)
    fn.alpha0 = alpha or 25.0
    other = fn(LABEL, 1, _prob(), ENTROPY, 0.0, _teacher_map(), _student, torch.Generator().manual_seed(0))
    assert abs(float(other) - float(base)) > 1e-3, why


def test_positive_is_the_mean_over_every_candidate_not_the_draws(monkeypatch):
    # Class 1's draws are {u0} (l1 is no anchor): a positive over the draws would be e1 (cosine 1) not (.3, .9, 0).
    import arco.losses.hard_negative as hn

    seen = {}
    original = hn.class_means

    def spy(keys, label, candidate, num_classes):
        out = original(keys, label, candidate, num_classes)
        seen["positive"] = out[0]
        return out

    monkeypatch.setattr(hn, "class_means", spy)
    _loss()
    torch.testing.assert_close(seen["positive"][1], torch.tensor([0.3, 0.9, 0.0]))


def test_negatives_come_from_the_hard_negative_bank(monkeypatch):
    # Replacing the bank's keys after the push by keys aligned with every anchor must raise the loss.
    loss, fn = _loss()
    table = fn.banks.table()
    table.copy_(F.normalize(torch.ones_like(table), dim=-1))
    again = fn(LABEL, 1, _prob(), ENTROPY, 0.0, _teacher_map(), _student, torch.Generator().manual_seed(0),
               update_bank=False)  # fmt: skip
    assert float(again) > float(loss) + 0.1


def test_literal_rule_pushes_nothing_and_keeps_the_zero_key():
    # As written, the labeled terms exclude each other and with 3 classes the rank window 3..19 is empty: the
    # banks keep only their initial zero key (cosine 0 with every anchor).
    loss, fn = _loss("literal")
    assert fn.banks.count.tolist() == [1, 1, 1]
    assert float(fn.banks.keys[:, 0].abs().sum()) == 0
    cos1 = 0.9 / math.sqrt(0.9)
    assert float(loss) == pytest.approx((_ce(1.0, 0.0) + _ce(cos1, 0.0) + _ce(0.8, 0.0)) / 3, rel=1e-5)


def test_literal_class_matching_shifts_after_an_absent_class():
    # Class 0 absent: the reference pairs class 1's anchors with bank 2 and class 2's anchors with no bank (its
    # "i-th valid class" runs out), while the intended rule keeps every class with its own bank.
    fn = HardNegativeContrastiveLoss(3, 3, num_queries=4, num_negatives=NEG, capacities=8, rule="literal")
    has = torch.tensor([False, True, True])
    assert fn.bank_order(has).tolist()[:2] == [1, 2]
    assert HardNegativeContrastiveLoss(3, 3, capacities=8).bank_order(has).tolist() == [0, 1, 2]


def test_masks_follow_the_rules():
    m = contrast_masks(LABEL, 1, _prob(), ENTROPY, 25.0, "intended")
    assert m.candidate.tolist() == [True] * 4 + [True, False, False, False]
    assert m.anchor.tolist() == [True, False, True, True, True, False, False, False]
    expected = torch.zeros(3, 8, dtype=torch.bool)
    expected[0, [1, 2]] = expected[1, [0, 2, 3]] = expected[2, [0, 1, 3, 7]] = True
    assert torch.equal(m.negative, expected)
    literal = contrast_masks(LABEL, 1, _prob(), ENTROPY, 25.0, "literal")
    assert not literal.negative.any()
    # With 4 classes the literal unlabeled window is the last rank, and only where the pixel's own class ranks last.
    label = torch.tensor([[[0]], [[3]]])
    prob = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.5, 0.3, 0.15, 0.05]]).view(2, 4, 1, 1)
    lit = contrast_masks(label, 1, prob, torch.ones(1, 1, 1), 20.0, "literal").negative
    assert lit[:, 1].tolist() == [False, False, False, True] and not lit[:, 0].any()


def test_entropy_percentiles_match_numpy():
    g = torch.Generator().manual_seed(0)
    ent = torch.rand(2, 7, 9, generator=g)
    for alpha in (0.0, 7.5, 20.0):
        low, high = entropy_masks(ent, alpha)
        x = ent.numpy().ravel()
        assert torch.equal(low, ent <= float(np.percentile(x, alpha)))
        assert torch.equal(high, ent >= float(np.percentile(x, 100 - alpha)))


def test_class_ranks():
    prob = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]).view(2, 3, 1)
    assert class_ranks(prob)[:, :, 0].tolist() == [[2, 0, 1], [0, 2, 1]]


def test_fifo_push_keeps_the_newest_and_wraps():
    banks = ClassBanks([4, 3], 2)
    keys = torch.arange(20.0).view(2, 5, 2) + 1
    valid = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    banks.push(keys, valid)
    assert banks.count.tolist() == [3, 1] and banks.ptr.tolist() == [3, 1]
    banks.push(keys + 100, torch.tensor([[True, True, True, False, False], [True, True, True, True, True]]))
    # class 0: 3 old + 3 new into 4 slots -> the newest 4 in order; class 1: 5 new into 3 -> the last 3
    order0 = banks.table()[banks.physical(torch.zeros(4, dtype=torch.long), torch.arange(4))]
    expect0 = F.normalize(torch.stack([keys[0, 3], keys[0, 0] + 100, keys[0, 1] + 100, keys[0, 2] + 100]), dim=-1)
    torch.testing.assert_close(order0, expect0)
    order1 = banks.table()[banks.physical(torch.ones(3, dtype=torch.long), torch.arange(3))]
    torch.testing.assert_close(order1, F.normalize(keys[1, 2:] + 100, dim=-1))
    assert banks.count.tolist() == [4, 3]


def test_static_push_equals_the_row_push(monkeypatch):
    # The static path (CUDA, DDP) and the CPU row path leave identical banks.
    import arco.losses.hard_negative as hn

    g = torch.Generator().manual_seed(0)
    negative = torch.rand(3, 50, generator=g) < 0.4
    keys = torch.randn(50, 4, generator=g)
    a = HardNegativeContrastiveLoss(3, 4, capacities=[9, 7])
    b = HardNegativeContrastiveLoss(3, 4, capacities=[9, 7])
    for _ in range(3):
        a.push(keys, negative)
        monkeypatch.setattr(hn, "is_distributed", lambda: True)
        b.push(keys, negative)
        monkeypatch.undo()
        keys = keys + 1
    assert int(a.banks.count.sum()) > 0
    torch.testing.assert_close(a.banks.keys[:, :9], b.banks.keys[:, :9])  # slot 9 is the static path's trash
    assert torch.equal(a.banks.count, b.banks.count) and torch.equal(a.banks.ptr, b.banks.ptr)


def test_the_sampler_draws_anchors_and_negatives(monkeypatch):
    import arco.losses.hard_negative as hn

    seen = []
    original = hn.sample_bank
    monkeypatch.setattr(hn, "sample_bank", lambda sizes, num, strategy, *a, **k: seen.append(strategy)
                        or original(sizes, num, strategy, *a, **k))  # fmt: skip
    for s in ("ns", "sg", "sag"):
        _loss(strategy=s)
    assert seen == ["ns", "sg", "sag"]


def test_gradient_reaches_the_student_only():
    table = torch.eye(3).requires_grad_(True)
    fn = HardNegativeContrastiveLoss(3, 3, num_queries=4, num_negatives=NEG, tau=TAU, capacities=8)
    fn.alpha0 = 25.0
    keys = _teacher_map().requires_grad_(True)
    loss = fn(LABEL, 1, _prob(), ENTROPY, 0.0, keys, lambda i: table[LABEL.reshape(-1)[i]], None)
    loss.backward()
    assert table.grad.abs().sum() > 0 and keys.grad is None


def test_anchor_losses_average_to_the_class_loss():
    # The per-anchor losses of the hand-worked batch (its anchors, its positives) average to the loss.
    loss, fn = _loss()
    anchors = torch.tensor([0, 3, 4, 2])  # l0, l3 (class 0), u0 (class 1), l2 (class 2)
    classes = LABEL.reshape(-1)[anchors]
    positive = torch.tensor([[1.0, 0, 0], [0.3, 0.9, 0], [0.6, 0, 0.8]])
    per = fn.anchor_losses(_student(anchors), classes, positive, torch.Generator().manual_seed(1))
    by_class = torch.stack([per[classes == c].mean() for c in range(3)])
    assert float(by_class.mean()) == pytest.approx(float(loss), rel=1e-5)
    empty = HardNegativeContrastiveLoss(3, 3, capacities=8)
    assert torch.isnan(empty.anchor_losses(torch.eye(3), torch.arange(3), torch.eye(3))).all()
