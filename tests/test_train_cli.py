"""`arco train` / `arco demo` via the CLI: in-process on tiny phantoms, plug-ins, plus one subprocess error check."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from _tiny import TINY_2D, make_phantom
from arco.checkpoint import load_checkpoint, load_predictor
from arco.cli import main
from test_config import PLUGIN

TINY = [
    *TINY_2D,
    "schedule.iterations=3",
    "schedule.batch_labeled=2",
    "schedule.batch_unlabeled=2",
    "engine.device=cpu",
    "engine.log_every=1",
    "engine.val_every=3",
    "engine.progress=false",
]
ARCO_TINY = [
    "pretrain.iterations=3",
    "pretrain.queue_size=4",
    "finetune.iterations=3",
    "finetune.num_queries=8",
    "finetune.num_negatives=8",
    "finetune.bank_size=16",
    "finetune.nn_bank=4",
    "finetune.nn_k=2",
]


def _args(tmp_path, *extra, arco=True):
    sets = [*TINY, *(ARCO_TINY if arco else []), f"data.root={tmp_path / 'data'}"]
    make_phantom("phantom2d", sets)
    return ["train", "--config", "phantom2d", *[a for kv in sets for a in ("--set", kv)], "--out",
            str(tmp_path / "run"), *extra]  # fmt: skip


def test_train_runs_both_stages_in_process(tmp_path, capsys):
    assert main(_args(tmp_path)) == 0
    run = tmp_path / "run"
    for stage in ("pretrain", "finetune"):
        for name in ("config.yaml", "split.json", "log.csv", "summary.json", "checkpoints/last.pt",
                     "checkpoints/best.pt"):  # fmt: skip
            assert (run / stage / name).is_file(), f"{stage}/{name}"
    state = load_checkpoint(run / "finetune" / "checkpoints" / "last.pt")
    assert state["stage"] == "finetune" and state["method"] == "arco-finetune" and state["iteration"] == 3
    assert {"student", "teacher", "rep_head", "contrast", "nn_loss"} <= set(state["modules"])
    stages = {s["name"]: s for s in state["config"]["stages"]}
    assert stages["finetune"]["params"]["sampler"] == "sg"
    assert "generator" in state["method_state"] and "torch" in state["rng"]
    model, meta = load_predictor(run / "finetune")
    assert meta["data"]["dataset"] == "phantom2d" and meta["data"]["num_classes"] == 4
    assert model(torch.zeros(1, 1, 32, 32)).logits.shape == (1, 4, 32, 32)
    assert "best val Dice" in capsys.readouterr().out
    # resume: both stages finished -> nothing to redo, same summaries
    before = json.loads((run / "finetune" / "summary.json").read_text())
    assert main(_args(tmp_path, "--resume")) == 0
    assert json.loads((run / "finetune" / "summary.json").read_text()) == before


def test_train_a_method_by_name_and_print_config(tmp_path, capsys):
    assert main(_args(tmp_path, "--method", "supervised", arco=False)) == 0
    assert (tmp_path / "run" / "supervised" / "checkpoints" / "best.pt").is_file()
    assert not (tmp_path / "run" / "pretrain").exists()
    assert main(["train", "--config", "acdc", "--print-config"]) == 0
    assert "lambda_contrast: 0.01" in capsys.readouterr().out


def test_one_stage_with_init(tmp_path):
    assert main(_args(tmp_path, "--stage", "pretrain")) == 0
    assert not (tmp_path / "run" / "finetune").exists()
    assert main(_args(tmp_path, "--stage", "finetune")) == 0  # starts from the pretrain stage's last.pt
    assert load_checkpoint(tmp_path / "run" / "finetune" / "checkpoints" / "last.pt")["iteration"] == 3
    other = tmp_path / "other"
    assert main([*_args(tmp_path, "--stage", "finetune")[:-1], str(other)]) != 0  # no pretrain there: clear error


def test_list_methods_reads_the_registry(capsys):
    assert main(["train", "--list-methods"]) == 0
    out = capsys.readouterr().out
    for name in ("supervised", "arco", "arco-ns", "arco-sag", "arco-pretrain", "arco-finetune", "NeurIPS 2023"):
        assert name in out


def test_a_plugin_method_from_a_file_outside_arco_trains_through_the_cli(tmp_path, capsys, scratch_registry):
    plugin = tmp_path / "elsewhere" / "my_method.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN.replace("plugin-mean-consistency", "plugin-cli-consistency"))
    args = _args(tmp_path, "--plugin", str(plugin), "--method", "plugin-cli-consistency", "--iterations", "4",
                 arco=False)  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "run" / "plugin-cli-consistency"
    header = (run / "log.csv").read_text().splitlines()[0]
    assert header == "iteration,stage,lr,loss,loss_sup,loss_cons,grad_norm,grad_norm_max,val_dice"
    assert json.loads((run / "summary.json").read_text())["completed_iterations"] == 4
    assert main(["train", "--plugin", str(plugin), "--list-methods"]) == 0
    assert "plugin-cli-consistency" in capsys.readouterr().out


def test_bad_key_in_process_is_a_clean_error(tmp_path, capsys):
    assert main(["train", "--config", "phantom2d", "--set", "finetune.sampl=sag", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "finetune.sampl" in err and "finetune.sampler" in err


def test_bad_set_key_subprocess_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "arco", "train", "--config", "phantom2d", "--set", "optim.learning_rate=0.1",
         "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "optim.learning_rate" in proc.stderr
    assert "did you mean" in proc.stderr


@pytest.mark.slow
def test_demo_fast_end_to_end(tmp_path, capfd):
    sets = ["pretrain.iterations=8", "finetune.iterations=8", "schedule.iterations=16", "engine.val_every=4",
            "data.subjects=8"]  # fmt: skip
    assert main(["demo", "--out", str(tmp_path / "demo"), *[a for kv in sets for a in ("--set", kv)]]) == 0
    s = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for method in ("supervised", "arco"):
        assert 0.0 <= s[method]["dice"] <= 1.0 and s[method]["asd"] >= 0.0 and s[method]["per_class"]
    assert s["iterations"]["supervised"] == 16 and s["wall_seconds"] > 0
    assert (tmp_path / "demo" / "evaluation" / "arco" / "summary.json").is_file()
    out, err = capfd.readouterr()  # file descriptors: the worker processes' output too
    assert "Δ Dice" in out and out.rstrip().endswith(f"open {tmp_path / 'demo' / 'report.html'}")
    # the two parallel trainings share one progress line; the workers draw no bars of their own
    assert "training:" in err and not re.search(r"(supervised|pretrain|finetune):\s+\d+%", err)
    assert (tmp_path / "demo" / "report.html").is_file()


@pytest.mark.slow
def test_phantom3d_vnet_pipeline_learns(tmp_path):
    """Both ARCO stages with the VNet, 3D samplers and 3D heads on phantom3d; Dice above chance."""
    from arco.config import load_config
    from arco.pipeline import train

    cfg = load_config(
        "phantom3d",
        [
            f"data.root={tmp_path / 'data'}",
            "data.subjects=8",
            "data.image_size=32",
            "data.patch_size=[32, 32, 32]",
            "data.labeled=2",
            "model.n_filters=8",
            "pretrain.iterations=40",
            "finetune.iterations=80",
            "finetune.confidence=0.8",
            "schedule.lr=0.05",
            "engine.device=cpu",
            "engine.val_every=40",
            "engine.progress=false",
        ],
    )
    make_phantom("phantom3d", [f"data.root={tmp_path / 'data'}", "data.subjects=8", "data.image_size=32"])
    out = train(cfg, tmp_path / "run")
    assert out["finetune"]["best_val_dice"] > 0.5, out["finetune"]
