"""GCL: the global and local contrastive losses against loops over pairs, partitions from slice positions (data ->
batch -> loss), what each stage trains, resume, and the three-stage recipe through the CLI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _cli_runs import smoke
from _tiny import assert_resume_identical, build, make_phantom
from arco.checkpoint import load_checkpoint
from arco.losses.gcl import global_contrastive_loss, local_contrastive_loss, local_regions, region_corners
from arco.methods import Batch, get_recipe


def batch(positions: tuple[list[float], list[float]] | None = None) -> Batch:
    g = torch.Generator().manual_seed(3)
    pos = (None, None) if positions is None else tuple(torch.tensor(p) for p in positions)
    return Batch(torch.rand(2, 1, 32, 32, generator=g), torch.zeros(2, 32, 32, dtype=torch.long),
                 torch.rand(2, 1, 32, 32, generator=g), *pos)  # fmt: skip


def _sim(z, tau):
    z = F.normalize(z, dim=-1)
    return z @ z.t() / tau


def test_global_loss_by_explicit_pairs_with_partitions():
    z, group, tau = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), [0, 0, 1, 1, 0, 2], 0.1
    s = _sim(z, tau)
    terms = []
    for a in range(6):
        negatives = [n for n in range(6) if group[n] != group[a]]
        for p in range(6):
            if p != a and group[p] == group[a]:
                denom = torch.exp(s[a, p]) + sum(torch.exp(s[a, n]) for n in negatives)
                terms.append(-torch.log(torch.exp(s[a, p]) / denom))
    expected = torch.stack(terms).mean()
    assert float(global_contrastive_loss(z, torch.tensor(group), tau)) == pytest.approx(float(expected), rel=1e-5)


def test_global_loss_without_partitions_is_simclr_nt_xent():
    n, tau = 4, 0.1
    z = torch.randn(2 * n, 7, generator=torch.Generator().manual_seed(1))
    s = _sim(z, tau).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    nt_xent = F.cross_entropy(s, (torch.arange(2 * n) + n) % (2 * n))
    got = global_contrastive_loss(z, torch.arange(n).repeat(2), tau)
    assert float(got) == pytest.approx(float(nt_xent), rel=1e-5)


def test_local_loss_by_explicit_loops():
    g = torch.Generator().manual_seed(2)
    e1, e2, tau = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g), 0.1
    terms = []
    for i in range(2):
        views = [F.normalize(e1[i], dim=-1), F.normalize(e2[i], dim=-1)]
        for v in range(2):
            for k in range(3):
                u, pos = views[v][k], views[1 - v][k]
                negs = [views[w][j] for w in range(2) for j in range(3) if j != k]
                denom = torch.exp(u @ pos / tau) + sum(torch.exp(u @ n / tau) for n in negs)
                terms.append(-torch.log(torch.exp(u @ pos / tau) / denom))
    expected = torch.stack(terms).mean()
    assert float(local_contrastive_loss(e1, e2, tau)) == pytest.approx(float(expected), rel=1e-5)


def test_thirteen_regions_as_the_authors_code():
    # A 192x192 input, 3 decoder blocks: a 48x48 map, 3x3 regions, corners at 0, 11, 22, 33, 44.
    corners = region_corners(48, 48).tolist()
    assert corners[:9] == [[r, c] for r in (0, 22, 44) for c in (0, 22, 44)]
    assert corners[9:] == [[11, 11], [11, 33], [33, 11], [33, 33]]
    f = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).view(2, 4, 8, 8)
    win = local_regions(f, region_corners(8, 8))
    assert win.shape == (2, 13, 36)
    assert torch.equal(win[1, 2].view(4, 3, 3), f[1, :, 0:3, 4:7])  # region 2: top row, right end
    with pytest.raises(ValueError, match="too small for 13 distinct"):
        region_corners(7, 40)


def test_partitions_come_from_slice_positions_and_fall_back_to_images(monkeypatch):
    from arco.methods import gcl

    seen = []
    original = gcl.global_contrastive_loss

    def spy(z, group, tau):
        seen.append(group.clone())
        return original(z, group, tau)

    monkeypatch.setattr(gcl, "global_contrastive_loss", spy)
    m = build("gcl-global")
    out = m.training_step(batch(([0.0, 0.3], [0.5, 0.99])), 0)
    assert seen[-1].tolist() == [0, 1, 2, 3] * 2  # floor(4 * position), both views
    assert float(out.logs["positives"]) == 1.0
    m.training_step(batch(([0.1, 0.2], [0.6, 0.15])), 0)
    assert seen[-1].tolist() == [0, 0, 2, 0] * 2
    m.training_step(batch(), 0)
    assert seen[-1].tolist() == [0, 1, 2, 3] * 2  # no positions: one group per image (G^R)


def test_slice_positions_travel_from_the_dataset_to_the_batch(tmp_path):
    from arco.config import load_config
    from arco.data import build_data
    from arco.data.datasets import slice_positions
    from arco.engine.stream import BatchStream

    ids = ["a_slice_0", "a_slice_1", "b_slice_0", "a_slice_2", "b_slice_1"]
    assert slice_positions(ids) == [0.0, 1 / 3, 0.0, 2 / 3, 0.5]
    assert slice_positions(["a_slice_0", "scan7"]) is None
    sets = [
        f"data.root={tmp_path}",
        "data.subjects=4",
        "data.labeled=1",
        "data.image_size=32",
        "data.patch_size=[32, 32]",
    ]
    make_phantom("phantom2d", sets)
    data = build_data(load_config("phantom2d", sets).data)
    expected = slice_positions([*data.labeled.ids, *data.unlabeled.ids])
    assert float(data.labeled[1]["position"]) == pytest.approx(expected[1])
    b = next(iter(BatchStream(data.labeled, data.unlabeled, 2, 3, seed=0, start=0, total=1)))
    assert b.position_l.shape == (2,) and b.position_u.shape == (3,)
    assert ((b.position_u >= 0) & (b.position_u < 1)).all()


def _params(m, prefix):
    return {k: v.detach().clone() for k, v in m.components()["student"].named_parameters() if k.startswith(prefix)}


@pytest.mark.parametrize(
    ("name", "trained", "fixed"),
    [
        ("gcl-global", ("encoder.",), ("decoder.", "out_conv.")),
        ("gcl-local", ("decoder.0.", "decoder.1."), ("encoder.", "decoder.2.", "decoder.3.", "out_conv.")),
    ],
)
def test_each_pretraining_stage_trains_only_its_part(name, trained, fixed):
    m = build(name)
    before = {p: _params(m, p) for p in (*trained, *fixed)}
    out = m.training_step(batch(), 0)
    opt = torch.optim.SGD(m.param_groups(), lr=0.5)
    out.loss.backward()
    opt.step()
    for p in trained:
        now = _params(m, p)
        assert any(not torch.equal(now[k], before[p][k]) for k in now), f"{name}: {p} did not move"
    for p in fixed:
        now = _params(m, p)
        assert all(torch.equal(now[k], before[p][k]) for k in now), f"{name}: {p} moved"


def test_crop_resize_takes_the_requested_window():
    from arco.methods.gcl import _crop_resize

    x = torch.zeros(1, 1, 32, 32)
    x[..., :16, :16] = 1.0  # top-left quadrant
    out = _crop_resize(x, 0.5, (0.0, 0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(out[..., :30, :30], torch.ones(1, 1, 30, 30))
    same = _crop_resize(x, 1.0, (0.0, 0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(same, x, atol=1e-6)


@pytest.mark.parametrize("name", ["gcl-global", "gcl-local"])
def test_resume_is_bit_identical_with_the_heads(tmp_path, name):
    head = "global_head" if name == "gcl-global" else "local_head"
    assert head in assert_resume_identical(tmp_path, name)["modules"]


def test_recipe_trains_three_stages_through_the_cli_and_evaluates(tmp_path):
    assert [s.method for s in get_recipe("gcl").stages] == ["gcl-global", "gcl-local", "gcl-finetune"]
    sets = ("global.head_grid=1", "global.hidden_dim=32", "global.embed_dim=16", "local.embed_dim=16")
    run, _, result, _ = smoke(tmp_path, "gcl", 2, sets, iterations=2, split="val")
    assert 0.0 <= result["mean"]["dice"] <= 1.0
    glob, loc = (
        load_checkpoint(run / s / "checkpoints" / "last.pt")["modules"]["student"] for s in ("global", "local")
    )
    enc = [k for k in glob if k.startswith("encoder.") and k.endswith("weight")]
    assert enc and all(torch.equal(glob[k], loc[k]) for k in enc)  # stage 2 took stage 1's encoder and kept it
    assert not torch.equal(glob["decoder.0.conv.0.weight"], loc["decoder.0.conv.0.weight"])
