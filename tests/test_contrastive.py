"""L_contrast: both similarity forms against a naive (C, Q, N, dim) reference, and placeholder draws kept out of
the representation head's BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import arco.losses.contrastive as contrastive
import arco.losses.sampled_dot as sampled_dot_module
from arco import sampling
from arco.losses import PixelContrastiveLoss, pixel_contrastive_loss
from arco.losses.sampled_dot import sampled_dot

C, Q, N, DIM, K = 3, 5, 7, 6, 4


def _naive(query, key, ok, bank, bank_valid, num_negatives, tau, seed):
    """The loss written out: explicit pool, per-class allowed positions (nonzero), an explicit (Q, N, dim) gather
    of the drawn keys per class. Draw rule of the spec: rank = floor(u * |allowed|) on one uniform per draw."""
    query, key, bank = query.float(), key.float(), bank.float()
    c, q_num, dim = query.shape
    pool = torch.cat([key.reshape(-1, dim), bank.reshape(-1, dim)])
    classes = torch.arange(c)
    pool_class = torch.cat([classes.repeat_interleave(q_num), classes.repeat_interleave(bank.shape[1])])
    pool_ok = torch.cat([ok.reshape(-1), bank_valid.reshape(-1)])
    u = torch.rand(c, q_num * num_negatives, generator=torch.Generator().manual_seed(seed))
    losses = []
    for ci in range(c):
        allowed = torch.nonzero(pool_ok & (pool_class != ci)).squeeze(1)
        if not bool(ok[ci].any()) or allowed.numel() == 0:
            continue
        rank = (u[ci] * allowed.numel()).long().clamp_max(allowed.numel() - 1)
        negatives = pool[allowed[rank]].view(q_num, num_negatives, dim)
        positive = F.normalize(key[ci][ok[ci]].sum(0), dim=-1)
        pos = (query[ci] * positive).sum(-1, keepdim=True)
        neg = (query[ci].unsqueeze(1) * negatives).sum(-1)
        per_query = -torch.log_softmax(torch.cat([pos, neg], -1) / tau, -1)[:, 0]
        losses.append(per_query[ok[ci]].mean())
    return torch.stack(losses).mean() if losses else query.sum() * 0


def _inputs(case, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    query = F.normalize(torch.randn(C, Q, DIM, generator=g), dim=-1)
    key = F.normalize(torch.randn(C, Q, DIM, generator=g), dim=-1)
    store = F.normalize(torch.randn(C, K + 1, DIM, generator=g), dim=-1)
    bank = store[:, :K]  # a view into the ring buffer with its trash slot, as the module passes it
    ok = torch.ones(C, Q, dtype=torch.bool)
    bank_valid = torch.rand(C, K, generator=g) < 0.7
    if case == "absent_class":
        ok[1] = False
    elif case == "invalid_slots":
        ok[0, 2:] = False
        ok[2, 4:] = False
    elif case == "no_negatives":  # only class 0 exists anywhere: nothing to contrast with
        ok[1:] = False
        bank_valid[1:] = False
    elif case == "bank_negatives_only":
        ok[1:] = False
        bank_valid[:2] = False
    elif case == "strided_bank":  # a layout the row table cannot view in place: copied instead
        bank = store.transpose(0, 1).contiguous().transpose(0, 1)[:, :K]
    elif case == "empty_bank":
        bank, bank_valid = store[:, :0], bank_valid[:, :0]
    cast = [t.to(dtype) for t in (query, key, bank)]
    return cast[0].requires_grad_(True), cast[1], ok, cast[2], bank_valid


CASES = ["full", "absent_class", "invalid_slots", "no_negatives", "bank_negatives_only", "strided_bank", "empty_bank"]


@pytest.mark.parametrize("form", ["dense", "sampled", "auto", "auto-sampled", "mixed"])
@pytest.mark.parametrize("case", CASES)
def test_forms_match_naive_reference_loss_and_gradient(case, form, monkeypatch):
    if form == "auto-sampled":  # "auto" picking the sampled form for both tables
        monkeypatch.setattr(contrastive, "SAMPLED_ABOVE", 0)
        form = "auto"
    if form == "mixed":  # this step's keys dense, the bank sampled
        table_similarities = contrastive._table_similarities

        def mixed(query, table, rows, mask, form):
            return table_similarities(query, table, rows, mask, "dense" if table.shape[0] == C * Q else "sampled")

        monkeypatch.setattr(contrastive, "_table_similarities", mixed)
        form = "auto"
    query, key, ok, bank, bank_valid = _inputs(case)
    ref_query = query.detach().clone().requires_grad_(True)
    ref = _naive(ref_query, key, ok, bank, bank_valid, N, 0.5, seed=11)
    loss = pixel_contrastive_loss(query, key, ok, bank, bank_valid, N, 0.5, torch.Generator().manual_seed(11), form)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    if case == "no_negatives":
        assert float(loss.detach()) == 0.0 and loss.requires_grad
    ref.backward()
    loss.backward()
    assert torch.isfinite(query.grad).all()
    torch.testing.assert_close(query.grad, ref_query.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("form", ["dense", "sampled"])
def test_bf16_inputs_computed_in_float32(form):
    query, key, ok, bank, bank_valid = _inputs("invalid_slots", torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # must not push the similarities back to bf16
        loss = pixel_contrastive_loss(query, key, ok, bank, bank_valid, N, 0.5, torch.Generator().manual_seed(5), form)
    ref = _naive(query.float(), key, ok, bank, bank_valid, N, 0.5, seed=5)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert query.grad.dtype == torch.bfloat16 and torch.isfinite(query.grad.float()).all()


@pytest.mark.parametrize("path", ["pairs", "pairs-int64-blocks", "chunked"])
@pytest.mark.parametrize("table_rows, draws", [(9, 5), (3, 8), (40, 64)])  # draws > rows: repeats certain
@pytest.mark.parametrize("mask", ["all", "some", "none"])
def test_sampled_dot_matches_gather_with_repeated_rows(path, table_rows, draws, mask, monkeypatch):
    if path == "pairs-int64-blocks":  # wide keys (very large tables) and a backward over several row blocks
        monkeypatch.setattr(sampled_dot_module, "_INT32_KEYS_BELOW", 0)
        monkeypatch.setattr(sampled_dot_module, "_BLOCK_BYTES", 2 * 4 * 4)  # two rows of 4 floats per block
    if path == "chunked":  # the device path, on CPU, in chunks of 3 queries
        monkeypatch.setattr(sampled_dot_module, "_use_pairs", lambda query: False)
        monkeypatch.setattr(sampled_dot_module, "_CHUNK_ELEMENTS", 3 * draws * 4)
    g = torch.Generator().manual_seed(0)
    query = torch.randn(10, 4, generator=g, requires_grad=True)
    table = torch.randn(table_rows, 4, generator=g)
    rows = torch.randint(0, table_rows, (10, draws), generator=g)
    rows[:, 1] = rows[:, 0]  # a repeat within a query for sure
    mask = {"all": None, "some": torch.rand(10, draws, generator=g) < 0.5, "none": torch.zeros_like(rows) > 0}[mask]
    ref_query = query.detach().clone().requires_grad_(True)
    expected = (table[rows] * ref_query[:, None]).sum(-1)
    if mask is not None:  # masked draws: 0, no gradient
        expected = torch.where(mask, expected, 0)
    with torch.sparse.check_sparse_tensor_invariants():  # the CSR pattern must be a valid one
        out = sampled_dot(query, table, rows, mask)
    torch.testing.assert_close(out, expected)
    up = torch.randn(10, draws, generator=g)
    (out * up).sum().backward()
    (expected * up).sum().backward()
    torch.testing.assert_close(query.grad, ref_query.grad)


def test_form_is_checked():
    with pytest.raises(ValueError, match="form must be one of 'auto', 'dense', 'sampled'"):
        PixelContrastiveLoss(2, 4, form="gather")
    with pytest.raises(ValueError, match="pixel_contrastive_loss"):
        pixel_contrastive_loss(*_inputs("full")[:2], torch.ones(C, Q, dtype=torch.bool), *_inputs("full")[3:], form="x")


def test_module_forms_agree_on_the_same_draws():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 12, 12), generator=g)
    table = torch.randn(label.numel(), 8, generator=g, requires_grad=True)
    losses = []
    for form in ("dense", "sampled"):
        fn = PixelContrastiveLoss(3, 8, num_queries=6, num_negatives=9, bank_size=20, form=form)
        fn.bank.copy_(F.normalize(torch.randn(fn.bank.shape, generator=torch.Generator().manual_seed(1)), dim=-1))
        fn.bank_valid[:, :20] = True
        losses.append(fn(label, None, lambda i: table[i], lambda i: table[i], torch.Generator().manual_seed(4)))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ placeholder draws
S = 16


def test_placeholder_draws_leave_the_loss_alone():
    """Class 2 has five pixels (< num_queries) and class 3 none: their placeholder slots hold index 0, whose
    representation must not move the loss."""
    label = torch.zeros(2, S, S, dtype=torch.long)
    label[:, 8:14, 2:12] = 1
    label[1, 12, 3:8] = 2
    valid = torch.ones_like(label, dtype=torch.bool)
    valid[0, :8, :8] = False  # no real draw at pixel 0
    index, ok = sampling.sample_per_class(label, 4, 16, "sg", valid=valid, generator=torch.Generator().manual_seed(7))
    assert 0 < int(ok[2].sum()) < 16 and not bool(ok[3].any()) and bool((index[~ok] == 0).all())
    table = torch.randn(label.numel(), 12, generator=torch.Generator().manual_seed(0))
    moved = table.clone()
    moved[0] += 100.0

    def loss(t: torch.Tensor) -> torch.Tensor:
        fn = PixelContrastiveLoss(4, 12, num_queries=16, num_negatives=32, bank_size=40)
        return fn(label, valid, lambda i: t[i], lambda i: t[i], torch.Generator().manual_seed(7))

    torch.testing.assert_close(loss(moved), loss(table), rtol=1e-6, atol=1e-6)
