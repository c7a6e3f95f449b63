"""Pixel-level frameworks of ``finetune.framework`` (arco.losses.frameworks): each objective against a value worked
out by hand on tiny tensors, the queue and the predictor, and one training step per framework.

The tiny tensors: two drawn pixels (rows) of 2-d embeddings, plus an invalid third row (``ok`` False, a draw its
class could not fill) that must change nothing. Expected values are written from each paper's formula with
``math``, not from the implementation.
"""

from __future__ import annotations

import math

import pytest
import torch

from arco.losses.frameworks import FRAMEWORKS, NAMES, FrameworkOptions, KeyQueue, Predictor, build_framework
from arco.losses.frameworks.vicreg import vicreg_terms

Q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, -3.0]])  # student rows; row 2 is a placeholder draw
K = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-2.0, 7.0]])  # teacher rows at the same pixels
OK = torch.tensor([True, True, False])


def _build(name: str, rows: int = 3, **options) -> torch.nn.Module:
    # ``rows`` = 1 class x ``rows`` queries. With one query, SG on a 2-key queue with 2 blocks and 2 draws takes each
    # key exactly once, so the queue frameworks' values do not depend on the draw.
    return build_framework(
        name, num_classes=1, dim=2, strategy="sg", bank_blocks=2, num_queries=rows, num_negatives=2,
        options=FrameworkOptions(**options),
    )  # fmt: skip


def _fill(fn, keys) -> None:
    for key in keys:
        fn.queue.stash(torch.tensor([key]), torch.ones(1, dtype=torch.bool))
        fn.queue.flush()


def _one_by_one(fn, **kw) -> float:
    """The mean of the objective over the two valid rows, one call per row (one query per call)."""
    gen = torch.Generator().manual_seed(0)
    values = [float(fn.objective(Q[i : i + 1], K[i : i + 1], OK[i : i + 1], generator=gen, **kw)) for i in (0, 1)]
    assert float(fn.objective(Q[2:], K[2:], OK[2:], generator=gen, **kw)) == 0.0  # an invalid row counts for nothing
    return sum(values) / 2


def _nll(pos: float, others: list[float], tau: float) -> float:
    return -math.log(math.exp(pos / tau) / sum(math.exp(s / tau) for s in [pos, *others]))


# ------------------------------------------------------------------------------------------------ objectives
def test_simclr_is_nt_xent_over_both_views():
    fn = _build("simclr", tau=0.5)
    # z = [q0, q1, k0, k1]; cosines q0.q1 = 0, q0.k0 = 1, q0.k1 = .6, q1.k0 = 0, q1.k1 = .8, k0.k1 = .6
    expected = (
        _nll(1.0, [0.0, 0.6], 0.5)  # anchor q0: positive k0; negatives q1, k1
        + _nll(0.8, [0.0, 0.0], 0.5)  # q1: k1; q0, k0
        + _nll(1.0, [0.0, 0.6], 0.5)  # k0: q0; q1, k1
        + _nll(0.8, [0.6, 0.6], 0.5)  # k1: q1; q0, k0
    ) / 4
    assert float(fn.objective(Q, K, OK)) == pytest.approx(expected, rel=1e-6)
    default = _build("simclr").objective(Q, K, OK)  # τ = 0.1 (SimCLR's)
    assert float(default) == pytest.approx(
        (2 * _nll(1.0, [0.0, 0.6], 0.1) + _nll(0.8, [0.0, 0.0], 0.1) + _nll(0.8, [0.6, 0.6], 0.1)) / 4, rel=1e-5
    )


def test_moco_is_info_nce_against_the_queue():
    fn = _build("moco", rows=1)  # τ = 0.2
    _fill(fn, [[0.0, 1.0], [1.0, 1.0]])  # stored normalised: (0, 1), (s, s)
    s = 1 / math.sqrt(2)
    # q0 = (1, 0): positive k0 (cos 1), negatives (0, 1) -> 0 and (s, s) -> s; q1 = (0, 1): k1 -> .8, negatives 1, s
    expected = (_nll(1.0, [0.0, s], 0.2) + _nll(0.8, [1.0, s], 0.2)) / 2
    assert _one_by_one(fn) == pytest.approx(expected, rel=1e-6)
    assert float(_build("moco").objective(Q, K, OK)) == 0.0  # empty queue: the positive alone
    assert _build("moco").queue.bank.kmax == 65536


def test_isd_is_kl_of_similarity_distributions_over_the_queue():
    def kl(student: list[float], teacher: list[float], tau_s: float, tau_t: float) -> float:
        ps = [math.exp(v / tau_s) for v in student]
        pt = [math.exp(v / tau_t) for v in teacher]
        ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
        return sum(t * math.log(t / s) for s, t in zip(ps, pt) if t > 0)

    identity = lambda x, ok: x  # noqa: E731 - the predictor is tested on its own below
    # queue (1, 0), (0, 1); q0 = (1, 0) -> similarities (1, 0), its teacher k0 (1, 0) too; q1 (0, 1), k1 (.6, .8)
    fn = _build("isd", rows=1, tau=0.5, tau_teacher=0.25)
    _fill(fn, [[1.0, 0.0], [0.0, 1.0]])
    expected = (kl([1.0, 0.0], [1.0, 0.0], 0.5, 0.25) + kl([0.0, 1.0], [0.6, 0.8], 0.5, 0.25)) / 2
    assert _one_by_one(fn, head=identity) == pytest.approx(expected, rel=1e-5)
    assert expected > 0.05
    fn = _build("isd", rows=1)  # ISD's τ_s = 0.1, τ_t = 0.01: student (.8, .6) against teacher (.6, .8)
    _fill(fn, [[1.0, 0.0], [0.0, 1.0]])
    out = fn.objective(torch.tensor([[0.8, 0.6]]), torch.tensor([[0.6, 0.8]]), OK[:1], head=identity)
    assert float(out) == pytest.approx(kl([0.8, 0.6], [0.6, 0.8], 0.1, 0.01), rel=1e-5)
    assert float(_build("isd").objective(Q, K, OK, head=identity)) == 0.0  # empty queue
    assert _build("isd").queue.bank.kmax == 128000
    with pytest.raises(ValueError, match="predictor"):
        fn.objective(Q, K, OK)


def test_byol_is_two_minus_two_cosine_after_the_predictor():
    fn = _build("byol")
    identity = lambda x, ok: 2 * x  # noqa: E731 - the scale must not matter (both sides normalised)
    assert float(fn.objective(Q, K, OK, head=identity)) == pytest.approx(((2 - 2 * 1.0) + (2 - 2 * 0.8)) / 2)
    head = fn.build_head(2, 4)
    assert isinstance(head, Predictor)
    loss = fn.objective(Q, K, OK, head=head)
    loss.backward()
    assert torch.isfinite(loss) and head.fc1.weight.grad.abs().sum() > 0


def test_vicreg_terms_and_weights():
    q = torch.tensor([[0.1, 0.2], [0.3, 0.0], [0.0, 0.1], [9.0, 9.0]])  # small: the variance hinge is active
    k = torch.tensor([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [-9.0, 9.0]])
    ok = torch.tensor([True, True, True, False])
    # invariance: the 6 squared differences .01, 3.24, .49, 1, 4, .01 -> mean 8.75 / 6
    # q: columns (.1, .3, 0) var 7/300 and (.2, 0, .1) var 1/100, covariance (-1/300 - 5/300 + 0) / 2 = -1/100
    # k: columns (0, 1, 2) var 1 and (2, 1, 0) var 1, covariance -1 (n - 1 = 2 everywhere)
    v = lambda var: max(0.0, 1 - math.sqrt(var + 1e-4))  # noqa: E731
    inv, var, cov = vicreg_terms(q, k, ok)
    assert float(inv) == pytest.approx(8.75 / 6, rel=1e-6)
    expected_var = ((v(7 / 300) + v(0.01)) / 2 + (v(1.0) + v(1.0)) / 2) / 2  # mean over d, then the two branches / 2
    assert float(var) == pytest.approx(expected_var, rel=1e-5) and expected_var > 0.4
    assert float(cov) == pytest.approx(2 * 0.01**2 / 2 + 2 * 1.0**2 / 2, rel=1e-5)  # both off-diagonals, / d
    expected = 25 * 8.75 / 6 + 25 * expected_var + 2 * 0.01**2 / 2 + 2 * 1.0**2 / 2  # λ = μ = 25, ν = 1
    assert float(_build("vicreg").objective(q, k, ok)) == pytest.approx(expected, rel=1e-5)
    assert float(_build("vicreg", weights=(1.0, 0.0, 0.0)).objective(q, k, ok)) == pytest.approx(8.75 / 6, rel=1e-6)
    assert all(float(t) == 0 for t in vicreg_terms(q, k, torch.tensor([True, False, False, False])))


# ------------------------------------------------------------------------------------------------ parts
def test_queue_keys_enter_at_the_next_training_call_only():
    fn = _build("moco")
    fn.objective(Q, K, OK, update=True)
    assert int(fn.queue.count) == 0 and fn.queue.pending_ok.tolist() == [True, True, False]
    fn.objective(Q, K, OK, update=False)  # diagnostics never move the queue
    assert int(fn.queue.count) == 0
    fn.objective(Q, K, OK, update=True)
    assert int(fn.queue.count) == 2
    torch.testing.assert_close(fn.queue.table()[:2], torch.nn.functional.normalize(K[:2], dim=-1))
    state = {k: v.clone() for k, v in fn.state_dict().items()}
    assert {"queue.pending", "queue.pending_ok", "queue.bank.keys"} <= set(state)


def test_queue_draws_follow_the_sampler():
    q = KeyQueue(96, 2, 96)
    q.stash(torch.randn(96, 2), torch.ones(96, dtype=torch.bool))
    q.flush()
    rows, ok = q.draw(1, 16, "sg", 16, torch.Generator().manual_seed(0))
    assert ok.all() and int(q.count) == 96
    assert torch.bincount(rows.view(-1) // 6, minlength=16).tolist() == [1] * 16  # SG: one draw per block of 6
    rows, _ = q.draw(1, 16, "ns", 16, torch.Generator().manual_seed(0))
    assert torch.bincount(rows.view(-1) // 6, minlength=16).tolist() != [1] * 16  # NS: not stratified


def test_predictor_statistics_come_from_the_valid_rows():
    torch.manual_seed(0)
    head = Predictor(2, 4)
    x = torch.randn(5, 2)
    ok = torch.tensor([True, True, True, False, False])
    a = head(x, ok)
    b = head(torch.cat([x[:3], 100 * torch.randn(2, 2)]), ok)
    torch.testing.assert_close(a[:3], b[:3])
    torch.testing.assert_close(head(x[:3]), a[:3])


def test_registry_and_options_are_checked():
    assert sorted(NAMES) == FRAMEWORKS.names()
    with pytest.raises(ValueError, match="did you mean 'moco'"):
        build_framework("mocco", num_classes=2, dim=2)
    with pytest.raises(ValueError, match="strategy must be one of"):
        build_framework("simclr", num_classes=2, dim=2, strategy="sga")
    with pytest.raises(ValueError, match="tau must be > 0"):
        FrameworkOptions(tau=0)


# ------------------------------------------------------------------------------------------- training step
def _method(framework: str, **over):
    from test_methods import build

    return build("arco-finetune", framework=framework, num_queries=8, num_negatives=8, framework_queue=64, **over)


@pytest.mark.parametrize("framework", NAMES)
def test_training_steps_give_finite_losses_and_student_gradients(framework):
    from test_methods import batch, sgd_step

    m = _method(framework)
    assert type(m.contrast) is FRAMEWORKS.get(framework)
    assert ("contrast_head" in m.components()) == (framework in ("byol", "isd"))
    b = batch()
    sgd_step(m, b, 0)  # fills the queues
    out = m.training_step(b, 1)
    assert torch.isfinite(out.loss) and float(out.logs["loss_contrast"]) > 0
    contrast = m.contrast_loss(m.strong_views(b, torch.Generator().manual_seed(0)), m.student_forward(
        b.image_l, b.image_u), b.label_l, 1, torch.Generator().manual_seed(1), update=False)  # fmt: skip
    contrast.backward()
    for name in ("student", "rep_head", "rep_pair", *(("contrast_head",) if m.framework_head() is not None else ())):
        grads = [p.grad for p in m.components()[name].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} got no gradient"
    assert all(p.grad is None for p in m.teacher_rep_head.parameters())


def test_config_names_the_framework_options():
    from arco.config import load_config

    with pytest.raises(ValueError, match="finetune.framework must be one of"):
        load_config("demo", ["finetune.framework=mocov2"])
    with pytest.raises(ValueError, match="finetune.framework_"):
        load_config("demo", ["finetune.framework_tau=0"])
    cfg = load_config("demo", ["finetune.framework=vicreg", "finetune.framework_weights=[1, 2, 3]"])
    assert cfg.stage("finetune").params.framework_options().weights == (1.0, 2.0, 3.0)
