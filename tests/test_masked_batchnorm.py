"""MaskedBatchNorm1d: exactly BatchNorm1d when every row is valid; invalid rows leave every statistic alone."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arco.models import MaskedBatchNorm1d, RepresentationHead


def _pair(momentum):
    torch.manual_seed(0)
    ref = nn.BatchNorm1d(6, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2.0)
        ref.bias.uniform_(-1.0, 1.0)
    masked = MaskedBatchNorm1d(6, momentum=momentum)
    masked.load_state_dict(ref.state_dict())
    return ref, masked


@pytest.mark.parametrize("momentum", [0.1, None])
def test_all_valid_equals_batchnorm1d_outputs_grads_and_running_stats(momentum):
    ref, masked = _pair(momentum)
    g = torch.Generator().manual_seed(1)
    for step in range(3):  # several steps: the running statistics compound
        x = (torch.randn(37, 6, generator=g) * 3 + step).requires_grad_(True)
        x2 = x.detach().clone().requires_grad_(True)
        up = torch.randn(37, 6, generator=g)
        y_ref, y = ref(x), masked(x2, torch.ones(37, dtype=torch.bool))
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        (y_ref * up).sum().backward()
        (y * up).sum().backward()
        torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
        for p, q in ((masked.weight, ref.weight), (masked.bias, ref.bias)):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(masked, name), getattr(ref, name), rtol=1e-5, atol=1e-6)
        assert int(masked.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    ref.eval(), masked.eval()
    x = torch.randn(5, 6, generator=g)
    torch.testing.assert_close(masked(x, torch.zeros(5, dtype=torch.bool)), ref(x))  # eval: running stats only


def test_invalid_rows_contribute_nothing():
    ref, masked = _pair(0.1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 6, generator=g) * 2 + 1
    valid = torch.rand(20, generator=g) < 0.6
    assert 2 <= int(valid.sum()) < 20
    y_ref = ref(x[valid])  # the independent answer: plain BatchNorm on the valid rows alone
    poisoned = torch.where(valid[:, None], x, torch.full_like(x, 1e4)).requires_grad_(True)
    y = masked(poisoned, valid)
    torch.testing.assert_close(y[valid], y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
    y[valid].square().sum().backward()
    assert torch.all(poisoned.grad[~valid] == 0) and poisoned.grad[valid].abs().sum() > 0


@pytest.mark.parametrize("num_valid", [0, 1])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_fewer_than_two_valid_rows_change_nothing_and_stay_finite(num_valid, momentum):
    _, masked = _pair(momentum)
    masked(torch.randn(8, 6))  # move the stats off their initial values first
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    x = torch.randn(8, 6, requires_grad=True)
    valid = torch.arange(8) < num_valid
    y = masked(x, valid)
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    for k, v in masked.state_dict().items():
        assert torch.equal(v, before[k]), k
    if num_valid == 1:  # a single valid row has zero spread: it normalises to the bias
        torch.testing.assert_close(y[0], masked.bias.detach())


def test_state_dict_is_batchnorm1d_compatible_and_errors():
    ref, masked = _pair(0.1)
    assert list(masked.state_dict()) == list(ref.state_dict())
    assert isinstance(masked, nn.BatchNorm1d)
    with pytest.raises(ValueError, match="valid must be a bool tensor of shape"):
        masked(torch.randn(4, 6), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"input must be \(N, 6\)"):
        masked(torch.randn(4, 6, 2), torch.ones(4, dtype=torch.bool))


def test_bf16_input_statistics_in_float32():
    _, masked = _pair(0.1)
    x = torch.randn(16, 6).bfloat16()
    y = masked(x, torch.ones(16, dtype=torch.bool))
    assert y.dtype == torch.bfloat16 and masked.running_mean.dtype == torch.float32
    ref = F.batch_norm(x.float(), None, None, masked.weight, masked.bias, training=True)
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


def test_head_forward_at_valid_matches_the_valid_subset():
    torch.manual_seed(0)
    head = RepresentationHead([8, 4], dim=12).train()
    twin = copy.deepcopy(head)
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 4, 8, 8)]
    index = torch.randint(0, 128, (30,))
    valid = torch.arange(30) % 3 != 0
    out = head.forward_at(feats, index, (8, 8), valid)
    ref = twin.forward_at(feats, index[valid], (8, 8))
    torch.testing.assert_close(out[valid], ref, rtol=1e-5, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(head.mlp[1], name), getattr(twin.mlp[1], name))
    # Old checkpoints (a plain BatchNorm1d in the head) load unchanged.
    plain = nn.Sequential(nn.Linear(12, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 12))
    assert list(head.mlp.state_dict()) == list(plain.state_dict())
