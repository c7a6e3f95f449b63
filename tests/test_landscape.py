"""`arco landscape`: the per-pixel L_contrast against the loss itself, the weight surface's centre against the loss at
the checkpoint, the Li et al. directions, the slice choice, and both CLI verbs on a tiny trained run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _study import TINY_SET
from _tiny import make_phantom, tiny_data
from arco.cli import main
from arco.config import load_config
from arco.contrast_variance import load_run
from arco.data.volume import Volume
from arco.landscape import (
    check_pixel_run,
    choose_slices,
    default_slice,
    filter_normalized_directions,
    grid_coordinates,
    load_model,
    pixel_losses,
    sharpness,
    slice_input,
    weight_landscape,
)
from arco.landscape.slices import SliceInput
from arco.landscape.weights import LoadedModel, contrast_loss_fn, sup_loss_fn
from arco.pipeline import train


def _method(spatial_dims: int = 2):
    from test_methods import build

    m = build("arco-finetune", spatial_dims, delta_p=0.0)  # delta_p 0: every candidate is an anchor
    m.set_training(False)
    return m


def _fill_banks(m, keys_per_class: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    c, dim = m.num_classes, m.contrast.banks.dim
    cls = torch.arange(c).repeat_interleave(keys_per_class)
    m.contrast.banks.push_rows(cls, torch.randn(c * keys_per_class, dim, generator=g))


# ------------------------------------------------------------------------------------------------ pixels
def test_per_pixel_losses_average_to_the_loss_of_the_same_anchors():
    # One key per bank: every negative draw is that key, so the landscape's draws and the loss's agree. With every
    # pixel of the slice an anchor (delta_p 0, num_queries >= pixels) and the slice as the labeled row (the unlabeled
    # row carries no class), L_contrast = mean over classes of the mean anchor loss of the class.
    from arco.methods._arco_common import levels

    m = _method()
    _fill_banks(m, 1)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, 32, 32, generator=g)
    label = torch.zeros(1, 32, 32, dtype=torch.long)
    label[0, 8:20, 6:18], label[0, 20:26, 10:30] = 1, 2
    loss_map, pred = pixel_losses(m, SliceInput(image, label, None), torch.Generator().manual_seed(1))
    assert loss_map.shape == (32, 32) and pred.shape == (32, 32) and np.isfinite(loss_map).all()

    m.contrast.num_queries = 32 * 32
    x = torch.cat([image, torch.randn(1, 1, 32, 32, generator=g)])
    with torch.no_grad():
        s_out, t_out = m.student(x), m.teacher(x)
        prob = torch.softmax(t_out.logits, 1)
        teacher_map = m.teacher_rep_head.dense(levels(t_out))
    both = torch.cat([label, torch.full_like(label, -1)])

    def rep_student(index):
        return m.rep_pair(m.rep_head.forward_at(levels(s_out), index))

    with torch.no_grad():
        loss = m.contrast(both, 1, prob, torch.rand(1, 32, 32, generator=g), 0.0, teacher_map, rep_student,
                          torch.Generator().manual_seed(2), update_bank=False)  # fmt: skip
    per_class = [loss_map[label[0].numpy() == c].mean() for c in range(3)]
    assert float(loss) == pytest.approx(np.mean(per_class), rel=1e-5)
    assert np.ptp(per_class) > 0.01  # the classes differ: the comparison is not trivial


def test_per_pixel_losses_use_the_runs_bank_draws():
    m = _method()
    _fill_banks(m, 40)
    inp = SliceInput(torch.randn(1, 1, 32, 32), torch.randint(0, 3, (1, 32, 32)), None)
    a, _ = pixel_losses(m, inp, torch.Generator().manual_seed(0))
    b, _ = pixel_losses(m, inp, torch.Generator().manual_seed(0))
    c, _ = pixel_losses(m, inp, torch.Generator().manual_seed(1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # deterministic from the seed; the draws matter
    chunked, _ = pixel_losses(m, inp, torch.Generator().manual_seed(0), chunk=100)
    assert np.isfinite(chunked).all()
    m.contrast.banks.count[2] = 0
    empty, _ = pixel_losses(m, inp, torch.Generator().manual_seed(0))
    assert np.isnan(empty[inp.label[0].numpy() == 2]).all() and np.isfinite(empty[inp.label[0].numpy() != 2]).all()


def test_three_d_slice_window_and_landscape():
    label = np.zeros((20, 24, 24), dtype=np.int64)
    label[12, 3:7, 15:21] = 1
    vol = Volume(case_id="c3", image=np.random.default_rng(0).normal(size=(20, 24, 24)).astype(np.float32),
                 label=label, spacing=None)  # fmt: skip
    inp = slice_input(vol, 12, 3, (16, 16, 16))
    assert inp.image.shape == (1, 1, 16, 16, 16) and inp.plane == 8  # window 4..19 along axis 0
    assert inp.plane_label().sum() == label[12].sum()  # the foreground is inside the window's plane
    assert np.array_equal(inp.plane_image(), inp.image[0, 0, 8].numpy())
    small = slice_input(dataclasses.replace(vol, image=vol.image[:5], label=label[:5]), 2, 3, (16, 16, 16))
    assert small.plane == 2 and small.image[0, 0, 5:].abs().sum() == 0  # zero-padded beyond the volume
    m = _method(3)
    _fill_banks(m, 4)
    loss, pred = pixel_losses(m, inp, torch.Generator().manual_seed(0))
    assert loss.shape == (16, 16) == pred.shape and np.isfinite(loss).all()


def test_default_slice_shows_every_class():
    a = np.zeros((3, 8, 8), dtype=np.int64)
    a[1, :2, :2] = 1  # slice 1: classes 0, 1
    b = np.zeros((4, 8, 8), dtype=np.int64)
    b[1, :1, :1], b[1, 4:, 4:] = 1, 2  # slice 1: all classes, rarest 1 pixel
    b[3, :2, :2], b[3, 4:, 4:] = 1, 2  # slice 3: all classes, rarest 4 pixels
    vols = [
        Volume(case_id=n, image=np.zeros(x.shape, np.float32), label=x, spacing=None) for n, x in (("a", a), ("b", b))
    ]
    assert default_slice(b) == 3 and default_slice(a) == 1
    assert [(v.case_id, k) for v, k in choose_slices(vols, 3)] == [("b", 3)]
    assert [(v.case_id, k) for v, k in choose_slices(vols, 4)] == [("b", 3)]  # none shows 4 classes: the most
    assert [(v.case_id, k) for v, k in choose_slices(vols, 3, ["a", "b"], 0)] == [("a", 0), ("b", 0)]
    with pytest.raises(ValueError, match="unknown case"):
        choose_slices(vols, 3, ["z"])
    with pytest.raises(ValueError, match="--slice 3 is outside case 'a'"):
        choose_slices(vols, 3, ["a"], 3)


# ------------------------------------------------------------------------------------------------ weights
def test_directions_are_filter_normalised_and_skip_one_dimensional_parameters():
    conv = torch.nn.Conv2d(3, 4, 3)
    bn = torch.nn.BatchNorm2d(4)
    params = [conv.weight, conv.bias, bn.weight]
    d = filter_normalized_directions(params, torch.Generator().manual_seed(0))
    torch.testing.assert_close(d[0].flatten(1).norm(dim=1), conv.weight.detach().flatten(1).norm(dim=1))
    assert d[1].abs().sum() == 0 and d[2].abs().sum() == 0
    again = filter_normalized_directions(params, torch.Generator().manual_seed(0))
    assert torch.equal(d[0], again[0])


def test_grid_and_sharpness():
    coords = grid_coordinates(5, 1.0)
    assert coords.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    a, b = np.meshgrid(coords, coords, indexing="ij")
    bowl = a**2 + b**2 + 3
    assert sharpness(coords, bowl, 0.5) == pytest.approx(0.25)  # the four points at 0.5
    assert sharpness(coords, bowl, 0.75) == pytest.approx((4 * 0.25 + 4 * 0.5) / 8)  # and the diagonals at 0.71
    with pytest.raises(ValueError, match="odd"):
        grid_coordinates(4, 1.0)
    with pytest.raises(ValueError, match="holds no grid point"):
        sharpness(coords, bowl, 0.1)


def test_weight_surface_centre_is_the_loss_at_the_weights():
    from test_methods import build

    data = tiny_data(2)
    net = build("supervised").student
    before = [p.detach().clone() for p in net.parameters()]
    model = LoadedModel(net, list(net.parameters()), data, Path("tiny.pt"), "supervised")
    result = weight_landscape(model, steps=3, span=0.5, seed=3)
    assert result.losses["loss_sup"][1, 1] == sup_loss_fn(net, data, torch.device("cpu"))()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))  # weights restored exactly
    assert np.ptp(result.losses["loss_sup"]) > 0 and list(result.losses) == ["loss_sup"]
    again = weight_landscape(model, steps=3, span=0.5, seed=3)
    other = weight_landscape(model, steps=3, span=0.5, seed=4)
    assert np.array_equal(result.losses["loss_sup"], again.losses["loss_sup"])
    assert not np.array_equal(result.losses["loss_sup"], other.losses["loss_sup"])


def test_three_d_weight_surface_uses_one_window_per_validation_case():
    from test_methods import build

    data = tiny_data(3)  # two 16^3 validation volumes, patch 16^3
    net = build("supervised", 3).student
    model = LoadedModel(net, list(net.parameters()), data, Path("tiny3d.pt"), "supervised")
    result = weight_landscape(model, steps=3, span=0.5, seed=0)
    direct = sup_loss_fn(net, data, torch.device("cpu"))()
    assert result.losses["loss_sup"][1, 1] == direct and np.isfinite(result.losses["loss_sup"]).all()


# ------------------------------------------------------------------------------------------------ a trained run
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("landscape")
    sets = [f"data.root={root / 'data'}", *TINY_SET, "engine.progress=false"]
    make_phantom("demo", sets)  # arco train never generates data
    train(load_config("demo", sets), root / "run")
    return root


def test_trained_run_surface_centre_and_cli(run_dir, tmp_path, capsys):
    model = load_model(str(run_dir / "run" / "finetune"))
    assert model.run is not None and model.checkpoint.name == "last.pt"
    result = weight_landscape(model, steps=3, span=0.2, seed=0, batches=1)
    fresh = load_run(run_dir / "run" / "finetune")
    assert result.losses["loss_contrast"][1, 1] == contrast_loss_fn(fresh, 1, 0)()
    net = fresh.method.segmentation_network()
    assert result.losses["loss_sup"][1, 1] == sup_loss_fn(net, fresh.data, torch.device("cpu"))()

    out = tmp_path / "w"
    assert main(["landscape", "weights", "--checkpoint", str(run_dir / "run" / "finetune"), "--steps", "3",
                 "--span", "0.2", "--batches", "1", "--no-progress", "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "weights.json").read_text())
    assert set(summary["sharpness"]) == {"loss_sup", "loss_contrast"} and summary["steps"] == 3
    assert summary["centre"]["loss_contrast"] == pytest.approx(float(result.losses["loss_contrast"][1, 1]))
    rows = (out / "weights_surface.csv").read_text().splitlines()
    assert rows[0] == "alpha,beta,loss_sup,loss_contrast" and len(rows) == 10
    assert (out / "weights_contour.png").stat().st_size > 1000 and (out / "weights_surface.png").stat().st_size > 1000
    assert main(["landscape", "weights", "--checkpoint", str(run_dir / "run" / "pretrain"), "--steps", "3",
                 "--no-progress", "--out", str(tmp_path / "p")]) == 0  # fmt: skip
    assert "not an ARCO stage-2 run" in capsys.readouterr().out
    assert main(["landscape", "weights", "--checkpoint", str(run_dir / "run" / "finetune"), "--steps", "4"]) == 2


def test_trained_run_pixels_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "px"
    assert main(["landscape", "pixels", "--checkpoint", str(run_dir / "run" / "finetune"), "--out", str(out)]) == 0
    summary = json.loads((out / "pixels.json").read_text())
    (item,) = summary["slices"]
    stem = out / item["files"]
    loss = np.load(f"{stem}.npy")
    lines = Path(f"{stem}.csv").read_text().splitlines()
    assert lines[0] == "row,col,label,prediction,loss" and len(lines) == loss.size + 1
    assert Path(f"{stem}.png").stat().st_size > 1000 and "class means" in capsys.readouterr().out
    assert main(["landscape", "pixels", "--checkpoint", str(run_dir / "run" / "finetune"), "--case", "nope",
                 "--out", str(out)]) == 2  # fmt: skip
    run = load_run(run_dir / "run" / "finetune")
    run.method.cfg = dataclasses.replace(run.method.cfg, contrast="batch")
    with pytest.raises(ValueError, match="finetune.contrast=reference"):
        check_pixel_run(run.method)
    run.method.cfg = dataclasses.replace(run.method.cfg, framework="byol")
    with pytest.raises(ValueError, match="finetune.framework=arco"):
        check_pixel_run(run.method)


def test_cli_bad_checkpoint_is_one_paragraph_in_a_subprocess(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "arco", "landscape", "weights", "--checkpoint", str(tmp_path / "nope"), "--out",
           str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    err = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "does not exist" in err and "Traceback" not in err
