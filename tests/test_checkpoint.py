"""arco.checkpoint: a truncated, damaged or foreign checkpoint is named and described (what it is, and the fix) by
``load_checkpoint`` / ``load_predictor``, ``arco evaluate`` / ``arco predict``, ``--resume`` and ``--init``."""

from __future__ import annotations

import gzip
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny import MODEL2D, MODEL3D, params_for, run_method, tiny_data, train_argv
from arco._checks import CheckpointError
from arco.checkpoint import load_checkpoint, load_predictor
from arco.cli import main
from arco.engine import EngineConfig
from arco.engine.state import load_modules
from arco.methods import ModelConfig, build_method

ENGINE = EngineConfig(device="cpu", log_every=1, val_every=2, progress=False, deterministic=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 2-iteration supervised stage on tiny 2D data (last.pt and best.pt)."""
    out = tmp_path_factory.mktemp("ckpt") / "supervised"
    run_method(out, "supervised", tiny_data(2), 2, engine=ENGINE)
    return out


def _damage_pickle(src: Path, dst: Path) -> None:
    """Overwrite the bytes of the checkpoint's ``data.pkl`` member (its CRC no longer matches; the zip is intact)."""
    data = bytearray(src.read_bytes())
    info = next(i for i in zipfile.ZipFile(src).infolist() if i.filename.endswith("data.pkl"))
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start : start + info.file_size] = b"\x07" * info.file_size
    dst.write_bytes(bytes(data))


def _make(kind: str, run: Path, dst: Path) -> None:
    last = run / "checkpoints" / "last.pt"
    if kind == "empty":
        dst.write_bytes(b"")
    elif kind == "truncated":
        dst.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif kind == "damaged":
        _damage_pickle(last, dst)
    elif kind == "text":
        dst.write_text("epoch 30, dice 0.9\n")
    elif kind == "nifti":
        dst.write_bytes(gzip.compress(b"\x5c\x01" + bytes(400)))
    elif kind == "pickled_model":
        torch.save(torch.nn.Linear(2, 2), dst)
    elif kind == "state_dict":
        torch.save(torch.nn.Linear(2, 2).state_dict(), dst)
    elif kind == "list":
        torch.save([torch.zeros(2)], dst)
    elif kind == "format":
        torch.save({**torch.load(last, weights_only=True), "format": 99}, dst)


KINDS = [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is a truncated torch file"),
    ("damaged", "is a damaged torch file (member"),
    ("text", "is not a torch file: it looks like a file starting with b'epoch 30'"),
    ("nifti", "is not a torch file: it looks like a gzip file"),
    ("pickled_model", "holding pickled Python objects (e.g. a whole model)"),
    ("state_dict", "holding a plain state_dict (2 tensors, e.g. 'weight'), not an arco checkpoint"),
    ("list", "holding a list, not an arco checkpoint"),
    ("format", "is an arco checkpoint of format 99; this arco reads formats 1 to 2"),
]


@pytest.mark.parametrize(("kind", "words"), KINDS, ids=[k for k, _ in KINDS])
def test_unreadable_or_foreign_files_are_described(run, tmp_path, kind, words):
    bad = tmp_path / f"{kind}.pt"
    _make(kind, run, bad)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    text = str(info.value)
    assert text.startswith(f"checkpoint {bad} ") and words in text, text
    assert "Fix:" in text


def test_unknown_or_mismatched_architecture(run, tmp_path):
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    torch.save({**state, "predictor": {**state["predictor"], "arch": "mystery-net"}}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"network 'mystery-net' this arco does not know \(known: .*unet"):
        load_predictor(tmp_path / "a.pt")
    kwargs = {**state["predictor"]["kwargs"], "num_classes": 7}
    torch.save({**state, "predictor": {**state["predictor"], "kwargs": kwargs}}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"b\.pt \(an arco checkpoint of stage 'supervised'.*does not fit"):
        load_predictor(tmp_path / "b.pt")


def _nifti(path: Path) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((32, 32, 3), np.float32), np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("verb", ["evaluate", "predict"])
def test_evaluate_and_predict_name_a_truncated_checkpoint(run, tmp_path, capsys, verb):
    bad = tmp_path / "best.pt"
    _make("truncated", run, bad)
    extra = ["--input", str(_nifti(tmp_path / "scan.nii.gz"))] if verb == "predict" else []
    assert main([verb, "--checkpoint", str(bad), "--out", str(tmp_path / "out"), *extra]) == 2
    err = "".join(capsys.readouterr().err.split())  # the CLI wraps lines
    assert f"checkpoint{bad}isatruncatedtorchfile" in err and "Fix:" in err and "Traceback" not in err


def test_resume_names_a_truncated_or_foreign_last_pt(run, tmp_path):
    data = tiny_data(2)
    stage = tmp_path / "stage"
    shutil.copytree(run, stage)
    last = stage / "checkpoints" / "last.pt"
    _make("truncated", run, last)
    with pytest.raises(CheckpointError, match=f"checkpoint {last} is a truncated torch file"):
        run_method(stage, "supervised", data, 4, engine=ENGINE, resume=True)
    shutil.copy(run / "checkpoints" / "best.pt", last)  # a best.pt lacks the optimiser and RNG state
    with pytest.raises(CheckpointError, match="without the run state needed to resume .*optimizers.*not a last.pt"):
        run_method(stage, "supervised", data, 4, engine=ENGINE, resume=True)
    shutil.copy(run / "checkpoints" / "last.pt", last)
    with pytest.raises(CheckpointError, match=r"weights of module 'student' do not fit.*config changed.*config\.yaml"):
        run_method(stage, "supervised", data, 4, engine=ENGINE, resume=True, model=ModelConfig(in_channels=2))


def test_init_names_a_foreign_checkpoint(run, tmp_path, capsys):
    data2d = tiny_data(2)
    sd = tmp_path / "state_dict.pt"
    _make("state_dict", run, sd)
    argv = train_argv(tmp_path / "data", tmp_path / "cli", ["schedule.iterations=1"], ("--method", "supervised"))
    assert main([*argv, "--init", str(sd)]) == 2
    assert "holdingaplainstate_dict" in "".join(capsys.readouterr().err.split())
    three_d = tmp_path / "vnet"
    run_method(three_d, "supervised", tiny_data(3), 1, model=MODEL3D, engine=ENGINE)
    with pytest.raises(CheckpointError, match=r"is an arco checkpoint of stage 'supervised' \(method 'supervised', "
                                              r"vnet, iteration 1\), trained with other model settings"):  # fmt: skip
        run_method(tmp_path / "a", "supervised", data2d, 1, init_from=three_d / "checkpoints" / "last.pt")
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**state, "modules": {}}, tmp_path / "empty_modules.pt")
    with pytest.raises(CheckpointError, match="holds no 'student' weights to initialise supervised"):
        run_method(tmp_path / "b", "supervised", data2d, 1, init_from=tmp_path / "empty_modules.pt")


def _as_format_1(state: dict) -> dict:
    """``state`` as arco wrote it before format 2 (ARCO's BYOL head under ``modules["predictor"]``)."""
    modules = {("predictor" if k == "global_predictor" else k): v for k, v in state["modules"].items()}
    return {**state, "format": 1, "modules": modules}


def test_format_1_arco_checkpoints_load_for_init_resume_and_predict(tmp_path):
    data = tiny_data(2)
    run_method(tmp_path / "pre", "arco-pretrain", data, 1, engine=ENGINE)
    state = torch.load(tmp_path / "pre" / "checkpoints" / "last.pt", weights_only=True)
    assert state["format"] == 2 and "global_predictor" in state["modules"] and "predictor" not in state["modules"]
    old = tmp_path / "old.pt"
    torch.save(_as_format_1(state), old)
    assert set(load_checkpoint(old)["modules"]) == set(state["modules"])  # upgraded when loaded
    model, _ = load_predictor(old)  # arco evaluate / predict
    assert all(torch.equal(v, state["predictor"]["state_dict"][k]) for k, v in model.state_dict().items())
    method = build_method("arco-finetune", params_for("arco-finetune"), 3, 2, MODEL2D)
    loaded = load_modules(method, load_checkpoint(old)["modules"], method.init_components, old)  # what --init loads
    assert "global_predictor" in loaded and set(loaded) == set(method.init_components)
    run_method(tmp_path / "fine", "arco-finetune", data, 2, engine=ENGINE, init_from=old)  # --init
    resumed_from = tmp_path / "fine" / "checkpoints" / "last.pt"
    torch.save(_as_format_1(torch.load(resumed_from, weights_only=True)), resumed_from)
    _, summary = run_method(tmp_path / "fine", "arco-finetune", data, 3, engine=ENGINE, resume=True)  # --resume
    assert summary["completed_iterations"] == 3 and torch.load(resumed_from, weights_only=True)["format"] == 2
