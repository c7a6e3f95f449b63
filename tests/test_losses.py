from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import arco.sampling
from arco.losses import (
    NearestNeighbourLoss,
    PixelContrastiveLoss,
    RelationalInstanceLoss,
    SupervisedLoss,
    dice_loss,
    pixel_contrastive_loss,
    supervised_loss,
    unsup_loss,
)


def _standin_sample_per_class(label, num_classes, num, strategy, grid=4, valid=None, generator=None):
    """Slow uniform stand-in, used only while arco.sampling.sample_per_class is not available."""
    flat = label.reshape(-1)
    keep = torch.ones_like(flat, dtype=torch.bool) if valid is None else valid.reshape(-1)
    index = torch.zeros(num_classes, num, dtype=torch.long)
    ok = torch.zeros(num_classes, num, dtype=torch.bool)
    for c in range(num_classes):
        cand = torch.nonzero((flat == c) & keep).flatten()
        cand = cand[torch.randperm(cand.numel(), generator=generator)][:num]
        index[c, : cand.numel()] = cand
        ok[c, : cand.numel()] = True
    return index, ok


@pytest.fixture(autouse=True)
def _sampler(monkeypatch):
    if not hasattr(arco.sampling, "sample_per_class"):
        monkeypatch.setattr(arco.sampling, "sample_per_class", _standin_sample_per_class, raising=False)


# ---------------------------------------------------------------- supervised


def test_supervised_hand_value():
    # Uniform logits, 2 classes, 4 pixels of class 0: CE = ln 2; Dice class 0 = 1 - 4/5, class 1 = 1 - 0/1.
    logits = torch.zeros(1, 2, 2, 2)
    label = torch.zeros(1, 2, 2, dtype=torch.long)
    expected = math.log(2) + 0.5 * ((1 - 4 / 5) + 1)  # weight 1: the ARCO stages (reference code)
    assert float(supervised_loss(logits, label)) == pytest.approx(expected, abs=1e-5)
    # weight 0.5: the SSL4MIS baselines
    assert float(supervised_loss(logits, label, weight=0.5)) == pytest.approx(0.5 * expected, abs=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 8), (1, 4, 4, 4)])
def test_supervised_perfect_is_minimal(shape):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, shape, generator=g)
    perfect = 40 * F.one_hot(label, 3).movedim(-1, 1).float()
    random = torch.randn(perfect.shape, generator=g)
    assert float(supervised_loss(perfect, label, num_classes=3)) < 1e-5
    assert float(SupervisedLoss()(random, label)) > 0.3
    assert float(dice_loss(perfect, label)) < 1e-5


def test_supervised_grad_and_errors():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    label = torch.randint(0, 3, (2, 4, 4))
    supervised_loss(logits, label).backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="label must be int64"):
        supervised_loss(logits, label.float())
    with pytest.raises(ValueError, match="num_classes=4"):
        supervised_loss(logits, label, num_classes=4)


# ---------------------------------------------------------------- unsupervised


def test_unsup_ignores_unconfident_exactly():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    pseudo = torch.randint(0, 3, (2, 4, 4), generator=g)
    conf = torch.rand(2, 4, 4, generator=g)
    conf[0, 0, 0] = 0.97  # the threshold itself counts
    mask = conf >= 0.97
    ce = F.cross_entropy(logits, pseudo, reduction="none")
    assert float(unsup_loss(logits, pseudo, conf)) == pytest.approx(float(ce[mask].mean()), rel=1e-6)
    changed = logits.clone()
    changed[~mask.unsqueeze(1).expand_as(logits)] = 1e3 * torch.randn(int((~mask).sum()) * 3, generator=g)
    assert torch.equal(unsup_loss(changed, pseudo, conf), unsup_loss(logits, pseudo, conf))


def test_unsup_none_confident_is_zero_with_graph():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = unsup_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4), threshold=0.5)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="pseudo"):
        unsup_loss(logits, torch.zeros(1, 4, 5, dtype=torch.long), torch.zeros(1, 4, 5))


# ---------------------------------------------------------------- stage-1 instance loss


def test_instance_kl_zero_for_identical_distributions():
    torch.manual_seed(0)
    loss_fn = RelationalInstanceLoss(8, queue_size=6, tau_s=0.1, tau_t=0.1)
    x = torch.randn(4, 8)
    assert float(loss_fn(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss_fn(x, torch.randn(4, 8))) > 0


def test_instance_hand_value_and_grad():
    loss_fn = RelationalInstanceLoss(2, queue_size=2, tau_s=1.0, tau_t=1.0)
    loss_fn.queue.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    student = torch.tensor([[1.0, 0.0]], requires_grad=True)  # sims (1, 0)
    teacher = torch.tensor([[0.0, 2.0]])  # normalised -> sims (0, 1)
    p_t = torch.tensor([1.0, math.e]) / (1 + math.e)
    p_s = torch.tensor([math.e, 1.0]) / (1 + math.e)
    expected = float((p_t * (p_t / p_s).log()).sum())
    loss = loss_fn(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_instance_teacher_and_student_temperatures_are_not_interchangeable():
    # tau_s = 0.5 on the student's similarities, tau_t = 0.25 on the teacher's (sharper): swapping either moves it.
    loss_fn = RelationalInstanceLoss(2, queue_size=2, tau_s=0.5, tau_t=0.25)
    loss_fn.queue.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    student = torch.tensor([[1.0, 0.0]])  # sims (1, 0)
    teacher = torch.tensor([[0.6, 0.8]])  # sims (.6, .8)
    p_s = torch.softmax(torch.tensor([1.0, 0.0]) / 0.5, 0)
    p_t = torch.softmax(torch.tensor([0.6, 0.8]) / 0.25, 0)
    expected = float((p_t * (p_t / p_s).log()).sum())
    assert float(loss_fn(student, teacher)) == pytest.approx(expected, rel=1e-6)
    swapped = torch.softmax(torch.tensor([0.6, 0.8]) / 0.5, 0)
    assert abs(expected - float((swapped * (swapped / p_s).log()).sum())) > 1e-3  # the check can fail


def test_instance_queue_ring_and_slots():
    loss_fn = RelationalInstanceLoss(4, queue_size=4, slots=2)
    a, b = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    loss_fn.enqueue(a)
    loss_fn.enqueue(b)  # writes slots 3, 0, 1 -> wrap-around
    assert int(loss_fn.ptr) == 2
    na, nb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    expected = torch.stack([nb[1], nb[2], na[2], nb[0]], dim=1)  # (slots, K, dim)
    torch.testing.assert_close(loss_fn.queue, expected)
    assert loss_fn(torch.randn(5, 2, 4), torch.randn(5, 2, 4)).shape == ()
    assert {"queue", "ptr"} <= set(loss_fn.state_dict())
    with pytest.raises(ValueError, match=r"\(B, 2, 4\)"):
        loss_fn(torch.randn(5, 4), torch.randn(5, 4))
    loss_fn.enqueue(torch.randn(9, 2, 4))  # more than K: only the last K are kept
    assert int(loss_fn.ptr) == 2


# ---------------------------------------------------------------- stage-2 pixel contrastive loss

DIM = 8


def _setup(label, valid=None):
    """Representations: class c pixels -> unit vector e_c (orthonormal); invalid pixels -> noise."""
    table = F.one_hot(label.reshape(-1), DIM).float()
    if valid is not None:
        noise = torch.randn(table.shape, generator=torch.Generator().manual_seed(1))
        table = torch.where(valid.reshape(-1, 1), table, noise)
    return table


def _exact(tau, num_negatives):
    # pos cosine 1, every negative cosine 0: CE = log(e^{1/tau} + N) - 1/tau for every query.
    return math.log(math.exp(1 / tau) + num_negatives) - 1 / tau


def _loss_fn(**kw):
    args = dict(num_classes=4, dim=DIM, num_queries=16, num_negatives=32, tau=0.5, bank_size=40)
    args.update(kw)
    return PixelContrastiveLoss(**args)


def _label(classes=(0, 1, 2, 3), shape=(2, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    pick = torch.tensor(classes)
    return pick[torch.randint(0, len(classes), shape, generator=g)]


def test_contrastive_exact_value_aligned_reps():
    label = _label()
    table = _setup(label)
    loss = _loss_fn()(label, None, lambda i: table[i], lambda i: table[i], torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(_exact(0.5, 32), rel=1e-5)


def test_contrastive_aligned_lower_than_random():
    label = _label()
    aligned = _setup(label)
    rnd = torch.randn(aligned.shape, generator=torch.Generator().manual_seed(3))
    fn = _loss_fn()
    good = fn(label, None, lambda i: aligned[i], lambda i: aligned[i])
    bad = fn(label, None, lambda i: rnd[i], lambda i: rnd[i])
    assert float(good) < float(bad) - 1.0


def test_contrastive_absent_class_skipped_and_identity_kept():
    # Class 2 absent: the loss must stay at the exact per-class value (a shifted class index would pair a
    # query with another class's positive and raise it), and class 2 gets nothing in the bank.
    label = _label(classes=(0, 1, 3))
    table = _setup(label)
    fn = _loss_fn()
    loss = fn(label, None, lambda i: table[i], lambda i: table[i])
    assert loss.item() == pytest.approx(_exact(0.5, 32), rel=1e-5)
    fn.enqueue()
    assert fn.bank_valid[2].sum() == 0 and int(fn.ptr[2]) == 0
    assert fn.bank_valid[[0, 1, 3]].sum(1).tolist() == [16, 16, 16]
    # the stored keys of class 3 are e_3 (identity preserved in the bank too)
    torch.testing.assert_close(fn.bank[3, :16], F.one_hot(torch.full((16,), 3), DIM).float())


def test_contrastive_ignores_invalid_pixels():
    label = _label()
    valid = torch.rand(label.shape, generator=torch.Generator().manual_seed(5)) > 0.5
    table = _setup(label, valid)
    loss = _loss_fn()(label, valid, lambda i: table[i], lambda i: table[i])
    assert loss.item() == pytest.approx(_exact(0.5, 32), rel=1e-5)


def test_contrastive_single_class_empty_bank_is_zero_with_graph():
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    table = _setup(label).requires_grad_(True)
    loss = _loss_fn()(label, None, lambda i: table[i], lambda i: table[i].detach())
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(table.grad).all()


def test_contrastive_bank_negatives_and_ring():
    fn = _loss_fn(bank_size=24)
    # step 1: only class 1 -> no negatives -> 0; its keys go to the bank
    l1 = torch.ones(1, 8, 8, dtype=torch.long)
    t1 = _setup(l1)
    assert float(fn(l1, None, lambda i: t1[i], lambda i: t1[i])) == 0.0
    fn.enqueue()
    assert int(fn.ptr[1]) == 16 and int(fn.bank_valid[1].sum()) == 16
    # step 2: only class 0 -> negatives come from the bank (class 1 keys, orthogonal) -> exact value
    l0 = torch.zeros(1, 8, 8, dtype=torch.long)
    t0 = _setup(l0)
    assert float(fn(l0, None, lambda i: t0[i], lambda i: t0[i])) == pytest.approx(_exact(0.5, 32), rel=1e-5)
    fn.enqueue()
    assert int(fn.ptr[1]) == 16  # class 1 absent: its bank is kept
    # wrap-around: 16 + 16 > 24
    fn(l1, None, lambda i: t1[i], lambda i: t1[i])
    fn.enqueue()
    assert int(fn.ptr[1]) == (16 + 16) % 24 and bool(fn.bank_valid[1, :24].all())
    assert not bool(fn.bank_valid[:, 24:].any())  # trash slot never valid
    fn.enqueue()  # nothing pending: no-op
    assert int(fn.ptr[1]) == 8
    assert {"bank", "bank_valid", "ptr"} <= set(fn.state_dict())


def test_contrastive_calls_reps_once_teacher_without_grad():
    label = _label()
    table = _setup(label)
    calls = []

    def student(i):
        calls.append(("s", i.shape, torch.is_grad_enabled()))
        return table[i]

    def teacher(i):
        calls.append(("t", i.shape, torch.is_grad_enabled()))
        return table[i]

    _loss_fn()(label, None, student, teacher)
    assert calls == [("s", (64,), True), ("t", (64,), False)]


def test_contrastive_deterministic_and_grad():
    label = _label()
    rnd = torch.randn(label.numel(), DIM, generator=torch.Generator().manual_seed(0), requires_grad=True)
    fn = _loss_fn()
    a = fn(label, None, lambda i: rnd[i], lambda i: rnd[i], torch.Generator().manual_seed(7))
    b = fn(label, None, lambda i: rnd[i], lambda i: rnd[i], torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.dtype == torch.float32
    a.backward()
    assert rnd.grad.abs().sum() > 0


def test_contrastive_pure_function_counts_only_ok_queries():
    # class 0 has one real query aligned with its positive and one garbage query that is not ok.
    q = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    ok = torch.tensor([[True, False], [True, True]])
    # Invalid bank entries of class 0 equal class 1's queries (cos 1): drawing one would raise the loss.
    bank = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(2, 1, 2).expand(2, 3, 2)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    loss = pixel_contrastive_loss(q, q, ok, bank, empty, num_negatives=64, tau=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 64) - 1, rel=1e-6)
    valid = torch.tensor([[True, False, False], [False, False, False]])
    worse = pixel_contrastive_loss(q, q, ok, bank, valid, num_negatives=64, tau=1.0)
    assert worse.item() > loss.item() + 0.01  # now class 1 does draw the aligned bank key


def test_contrastive_errors():
    fn = _loss_fn()
    with pytest.raises(ValueError, match="label must be int64"):
        fn(torch.zeros(2, 8, 8), None, None, None)
    with pytest.raises(ValueError, match="valid must be bool"):
        fn(torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(2, 8, 8), None, None)
    with pytest.raises(ValueError, match="tau"):
        PixelContrastiveLoss(4, 8, tau=0)


# ---------------------------------------------------------------- nearest-neighbour loss


def test_nn_hand_value_and_gradient():
    fn = NearestNeighbourLoss(2, bank_size=4, k=2)
    fn.enqueue(torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))
    student = torch.tensor([[2.0, 0.1]], requires_grad=True)
    loss = fn(student)
    s = F.normalize(student.detach(), dim=-1)[0]
    expected = ((1 - s[0]) + (1 - s[1])) / 2  # nearest: e_x, then e_y; -e_x is farther; slot 4 empty
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_nn_empty_bank_zero_with_graph_and_ring():
    fn = NearestNeighbourLoss(3, bank_size=4, k=2)
    x = torch.randn(2, 3, requires_grad=True)
    loss = fn(x)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    fn.enqueue(torch.randn(3, 3))
    fn.enqueue(torch.eye(3))
    assert int(fn.ptr) == 2 and bool(fn.bank_valid.all())
    torch.testing.assert_close(fn.bank[[3, 0, 1]], torch.eye(3))
    with pytest.raises(ValueError, match="k <= bank_size"):
        NearestNeighbourLoss(3, bank_size=4, k=5)


def test_loss_buffers_follow_dtype_and_device():
    fn = NearestNeighbourLoss(3, bank_size=4, k=2).to(torch.float64)
    assert fn.bank.dtype == torch.float64 and fn.bank_valid.dtype == torch.bool
    fn.enqueue(torch.randn(2, 3))
    assert fn(torch.randn(2, 3, dtype=torch.float64)).device == fn.bank.device
    inst = RelationalInstanceLoss(4, queue_size=3).to(torch.float64)
    inst.enqueue(torch.randn(2, 4))
    assert inst.queue.dtype == torch.float64


@pytest.mark.parametrize("name, shape", [("unet", (2, 1, 32, 32)), ("vnet", (2, 1, 16, 16, 16))])
def test_contrastive_end_to_end_with_backbone_and_head(name, shape):
    from arco.models import MODELS, FusedRepresentation, make_teacher

    torch.manual_seed(0)
    student = MODELS.build(name, in_channels=1, num_classes=2)
    channels = [student.bottleneck_channels, *student.feature_channels]
    head = FusedRepresentation(channels, dim=16, spatial_dims=len(shape) - 2)
    teacher, teacher_head = make_teacher(student), make_teacher(head)
    x = torch.randn(shape)
    s_out = student(x)
    with torch.no_grad():
        t_out = teacher(x)
        label = t_out.logits.argmax(1)
        label[..., : shape[-1] // 2] = 1 - label[..., : shape[-1] // 2]  # make sure both classes exist
    fn = PixelContrastiveLoss(2, 16, num_queries=16, num_negatives=32, bank_size=32)
    loss = fn(
        label,
        None,
        lambda i: head.forward_at([s_out.bottleneck, *s_out.features], i),
        lambda i: teacher_head.forward_at([t_out.bottleneck, *t_out.features], i),
    )
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert all(p.grad is not None for p in head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    fn.enqueue()
    assert bool(fn.bank_valid[:, :16].all())
