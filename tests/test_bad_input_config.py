"""Bad configuration-shaped input (train, study, curves, variance; config files, ``--set``, study YAML,
dataset.json, launcher options): a non-zero exit and one paragraph naming the key and the file, nothing changed
(issue 21). Scan- and output-shaped input is in test_bad_input.py; the harness is tests/_bad.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _bad import Bad, check_bad, cut
from _tiny import TRAIN_CLI_BASE, make_phantom
from test_data_loaders import make_nnunet

GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256))


def train(tmp: Path, *sets: str, extra=(), config="phantom2d") -> list[str]:
    argv = ["train", "--config", config, "--out", str(tmp / "run"), *extra]
    return [*argv, *[a for kv in sets for a in ("--set", kv)]]


def study_file(tmp: Path, **keys) -> Path:
    raw = {"base": "demo", "seeds": [0], "grid": {"sampler": {"ns": ["finetune.sampler=ns"],
           "sg": ["finetune.sampler=sg"]}}, **keys}  # fmt: skip
    path = tmp / "st.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def study(tmp: Path, path: Path) -> Bad:
    return Bad(["study", str(path), "--out", str(tmp / "study"), "--dry-run"], r"", [path], tmp / "study")


def nnunet(tmp: Path, **meta) -> Path:
    root = make_nnunet(tmp / "nn", cases=4)
    old = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**old, **meta}))
    return root


# ------------------------------------------------------------------------------------------- the table
def t_nproc_zero(tmp):
    return Bad(train(tmp, extra=("--nproc", "0")), r"--nproc must be >= 1 .*got 0", [], tmp / "run")


def t_study_compare_to_a_list(tmp):
    b = study(tmp, study_file(tmp, compare_to=["sampler", "ns"]))
    b.expect = r"st\.yaml\): compare_to must map a grid axis to its reference value.*\{sampler: ns\}"
    return b


def t_config_is_a_binary_scan(tmp):
    (tmp / "scan.nii.gz").write_bytes(GZIP)
    return Bad(train(tmp, extra=()) + ["--config", str(tmp / "scan.nii.gz")], r"config file \S*scan\.nii\.gz is not "
               "UTF-8 text.*gzip", [tmp / "scan.nii.gz"], tmp / "run")  # fmt: skip


def t_curves_binary_log(tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "log.csv").write_bytes(GZIP)
    return Bad(["curves", str(tmp / "run")], r"training log \S*run/log\.csv is not UTF-8 text", [tmp / "run"])


def t_n_filters_on_a_unet(tmp):
    return Bad(train(tmp, "model.n_filters=8"), r"model\.n_filters=8 does not apply to model\.arch='unet'", [],
               tmp / "run")  # fmt: skip


# ------------------------------------------------------------------------------------------------ arco train
def t_nproc_negative(tmp):
    return Bad(train(tmp, extra=("--nproc", "-2")), r"--nproc must be >= 1 .*got -2", [], tmp / "run")


def t_unknown_preset(tmp):
    return Bad(train(tmp) + ["--config", "phantom2dd"], r"config 'phantom2dd' is neither a file nor a preset \(did "
               "you mean 'phantom2d'", [], tmp / "run")  # fmt: skip


def t_config_not_yaml(tmp):
    (tmp / "c.yaml").write_text("data: [unclosed\n")
    return Bad(train(tmp) + ["--config", str(tmp / "c.yaml")], r"cannot parse config file \S*c\.yaml", [tmp / "c.yaml"])


def t_config_a_list(tmp):
    (tmp / "c.yaml").write_text("- data\n- model\n")
    return Bad(train(tmp) + ["--config", str(tmp / "c.yaml")], r"config file \S*c\.yaml must hold a mapping",
               [tmp / "c.yaml"])  # fmt: skip


def t_config_unknown_section(tmp):
    (tmp / "c.yaml").write_text("extends: phantom2d\ndatta:\n  root: x\n")
    return Bad(train(tmp) + ["--config", str(tmp / "c.yaml")], r"unknown config section 'datta' \(did you mean 'data'",
               [tmp / "c.yaml"])  # fmt: skip


def t_config_symlink_loop(tmp):
    os.symlink("c.yaml", tmp / "c.yaml")
    return Bad(train(tmp) + ["--config", str(tmp / "c.yaml")], r"c\.yaml", [tmp / "c.yaml"], tmp / "run")


def t_unknown_model_arch(tmp):
    return Bad(train(tmp, "model.arch=unett"), r"model\.arch='unett' is not a registered network \(did you mean "
               "'unet'", [], tmp / "run")  # fmt: skip


def t_set_without_equals(tmp):
    return Bad(train(tmp, "finetune.sampler"), r"--set expects KEY=VALUE .*'finetune\.sampler'", [], tmp / "run")


def t_set_unknown_section(tmp):
    return Bad(train(tmp, "foo.bar=1"), r"'foo' is neither a section", [], tmp / "run")


def t_set_unknown_data_key(tmp):
    return Bad(train(tmp, "data.rootx=/data"), r"unknown config key 'data\.rootx' \(did you mean 'data\.root'", [],
               tmp / "run")  # fmt: skip


def t_set_wrong_type(tmp):
    return Bad(train(tmp, "schedule.iterations=abc"), r"'schedule\.iterations' must be an integer, got str 'abc'",
               [], tmp / "run")  # fmt: skip


def t_set_bad_patch(tmp):
    return Bad(train(tmp, "data.patch_size=[0, 32]"), r"data\.patch_size", [], tmp / "run")


def t_set_unknown_stage_key(tmp):
    return Bad(train(tmp, "finetune.samplr=sag"), r"unknown config key 'finetune\.samplr' \(did you mean "
               r"'finetune\.sampler'", [], tmp / "run")  # fmt: skip


def t_set_bad_sampler(tmp):
    return Bad(train(tmp, "finetune.sampler=sgg"), r"sampler.*'sgg'", [], tmp / "run")


def t_set_bad_normalization(tmp):
    return Bad(train(tmp, "data.normalization=zscroe"), r"data\.normalization must be one of .*'zscroe' \(did you "
               "mean 'zscore'", [], tmp / "run")  # fmt: skip


def _phantom(tmp: Path) -> list[str]:
    sets = [*TRAIN_CLI_BASE, f"data.root={tmp / 'data'}"]
    make_phantom("phantom2d", sets)
    return sets


def t_set_labeled_ids_not_in_the_data(tmp):
    sets = _phantom(tmp)
    return Bad(train(tmp, *sets, "data.labeled=abc"), r"abc", [tmp / "data"], tmp / "run")


def t_set_bad_device(tmp):
    sets = _phantom(tmp)
    return Bad(train(tmp, *sets, "engine.device=tpu"), r"engine\.device.*'tpu'", [tmp / "data"], tmp / "run")


def t_unknown_method(tmp):
    return Bad(train(tmp, extra=("--method", "mean-teachr")), r"mean-teachr.*did you mean 'mean-teacher'", [],
               tmp / "run")  # fmt: skip


def t_zero_iterations(tmp):
    return Bad(train(tmp, extra=("--iterations", "0")), r"--iterations must be >= 1, got 0", [], tmp / "run")


def t_missing_plugin(tmp):
    return Bad(train(tmp, extra=("--plugin", str(tmp / "mine.py"))), r"mine\.py", [], tmp / "run")


def t_out_is_a_file(tmp):
    (tmp / "run").write_text("x")
    return Bad(train(tmp), r"--out \S*run is a file, not a folder", [tmp / "run"])


def t_phantom_root_missing_is_not_generated(tmp):
    return Bad(train(tmp, *TRAIN_CLI_BASE, f"data.root={tmp / 'data'}"), r"no phantom2d dataset at data\.root: \S*data"
               r" does not exist.*arco data phantom --kind 2d --out \S*data --subjects 6 --size 32", [],
               tmp / "data")  # fmt: skip


def t_phantom_root_holds_other_files(tmp):
    (tmp / "data").mkdir()
    (tmp / "data" / "notes.txt").write_text("x")
    return Bad(train(tmp, *TRAIN_CLI_BASE, f"data.root={tmp / 'data'}"), r"\S*data holds no phantom2d dataset "
               r"\(train_slices\.list does not exist", [tmp / "data"])  # fmt: skip


def t_init_checkpoint_missing(tmp):
    argv = train(tmp, *_phantom(tmp), extra=("--init", str(tmp / "no.pt")))
    return Bad(argv, r"no\.pt", [tmp / "data"], tmp / "run")


def t_dataset_json_num_training_via_train(tmp):
    root = nnunet(tmp, numTraining="six")
    return Bad(train(tmp, f"data.root={root}", config="nnunet"), r"\S*nn/dataset\.json: key 'numTraining' must be a "
               "whole number", [root], tmp / "run")  # fmt: skip


def t_dataset_json_label_value_a_string(tmp):
    root = nnunet(tmp, labels={"background": 0, "organ": "1", "lesion": 2})
    return Bad(train(tmp, f"data.root={root}", config="nnunet"), r"dataset\.json: 'labels' values must be integers",
               [root], tmp / "run")  # fmt: skip


def t_dataset_json_file_ending_a_number(tmp):
    root = nnunet(tmp, file_ending=7)
    return Bad(train(tmp, f"data.root={root}", config="nnunet"), r"dataset\.json: key 'file_ending' must be a string",
               [root], tmp / "run")  # fmt: skip


def t_dataset_json_num_training_negative(tmp):
    root = nnunet(tmp, numTraining=-1)
    return Bad(train(tmp, f"data.root={root}", config="nnunet"), r"key 'numTraining' must be a whole number.*-1",
               [root], tmp / "run")  # fmt: skip


def t_dataset_json_channel_names_a_list(tmp):
    root = nnunet(tmp, channel_names=["CT"])
    return Bad(train(tmp, f"data.root={root}", config="nnunet"), r"key 'channel_names' must be a mapping", [root],
               tmp / "run")  # fmt: skip


def t_nnunet_root_missing(tmp):
    return Bad(train(tmp, f"data.root={tmp / 'nnx'}", config="nnunet"), r"data\.root \S*nnx does not exist", [],
               tmp / "nnx")  # fmt: skip


# ------------------------------------------------------------------------------------------------ arco study
def t_study_seeds_a_number(tmp):
    b = study(tmp, study_file(tmp, seeds=3))
    b.expect = r"st\.yaml\): seeds must be a non-empty list of integers"
    return b


def t_study_seeds_repeated(tmp):
    b = study(tmp, study_file(tmp, seeds=[1, 1]))
    b.expect = r"st\.yaml\): seeds must be distinct"
    return b


def t_study_unknown_key(tmp):
    b = study(tmp, study_file(tmp, seed=[0]))
    b.expect = r"st\.yaml\): unknown key 'seed' \(did you mean 'seeds'"
    return b


def t_study_binary_file(tmp):
    (tmp / "st.yaml").write_bytes(GZIP)
    b = study(tmp, tmp / "st.yaml")
    b.expect = r"study file \S*st\.yaml is not UTF-8 text"
    return b


def t_study_grid_list_needs_a_key(tmp):
    b = study(tmp, study_file(tmp, grid={"labels": [1, 3]}))
    b.expect = r"st\.yaml\): grid\.labels: a list of values needs a config key"
    return b


def t_study_without_base(tmp):
    path = study_file(tmp)
    raw = yaml.safe_load(path.read_text())
    del raw["base"]
    path.write_text(yaml.safe_dump(raw))
    b = study(tmp, path)
    b.expect = r"st\.yaml\) needs `base:`"
    return b


def t_study_base_a_list(tmp):
    b = study(tmp, study_file(tmp, base=["demo"]))
    b.expect = r"st\.yaml\): base must be a non-empty string, got list"
    return b


def t_study_method_a_list(tmp):
    b = study(tmp, study_file(tmp, method=["arco"]))
    b.expect = r"st\.yaml\): method must be a non-empty string, got list"
    return b


def t_study_select_by_val_a_mapping(tmp):
    b = study(tmp, study_file(tmp, select_by_val={"sampler": 1}))
    b.expect = r"st\.yaml\): select_by_val must be a list of grid axis names"
    return b


def t_study_set_a_mapping(tmp):
    b = study(tmp, study_file(tmp, set={"data.root": "x"}))
    b.expect = r"st\.yaml\): set must be a list of KEY=VALUE strings"
    return b


def t_study_compare_to_unknown_value(tmp):
    b = study(tmp, study_file(tmp, compare_to={"sampler": "sgg"}))
    b.expect = r"compare_to sampler='sgg' is not a value of that axis \(did you mean 'sg'"
    return b


def t_study_description_a_list(tmp):
    b = study(tmp, study_file(tmp, description=["a", "b"]))
    b.expect = r"st\.yaml\): description must be a non-empty string"
    return b


def t_study_out_is_a_file(tmp):
    path = study_file(tmp)
    (tmp / "study").write_text("x")
    return Bad(["study", str(path), "--out", str(tmp / "study")], r"--out \S*study is a file", [path, tmp / "study"])


# ------------------------------------------------------------------------------------------------ curves, variance
def t_curves_missing_run(tmp):
    return Bad(["curves", str(tmp / "norun")], r"no training log: \S*norun does not exist", [])


def t_curves_log_without_iterations(tmp):
    (tmp / "log.csv").write_text("a,b\n1,2\n")
    return Bad(["curves", str(tmp / "log.csv")], r"log\.csv has no 'iteration' column", [tmp / "log.csv"])


def t_curves_out_not_png(tmp):
    (tmp / "log.csv").write_text("iteration,loss\n1,0.5\n")
    return Bad(["curves", str(tmp / "log.csv"), "--out", str(tmp / "c.jpg")], r"--out must be a \.png file, got \S*c"
               r"\.jpg", [tmp / "log.csv"], tmp / "c.jpg")  # fmt: skip


def t_curves_log_symlink_loop(tmp):
    (tmp / "run").mkdir()
    os.symlink("log.csv", tmp / "run" / "log.csv")
    return Bad(["curves", str(tmp / "run")], r"log\.csv is a symlink loop", [tmp / "run"])


def t_variance_missing_image(tmp):
    return Bad(["variance", "--image", str(tmp / "ct.nii.gz"), "--out", str(tmp / "v")], r"ct\.nii\.gz", [],
               tmp / "v")  # fmt: skip


def t_variance_out_is_a_file(tmp):
    (tmp / "v").write_text("x")
    return Bad(["variance", "--out", str(tmp / "v")], r"--out \S*v is a file, not a folder", [tmp / "v"])


CASES = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("t_") and callable(fn)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, capsys):
    check_bad(CASES[name](tmp_path), capsys)


# ------------------------------------------------------------------------------------------------ subprocesses
def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "arco", *argv], capture_output=True, text=True, env=env, **kw)


def test_nproc_rank_failure_is_one_paragraph_with_the_log_path(tmp_path):
    """The issue's row: a truncated image under --nproc 2 gave arco's error, then torchrun's traceback and its
    ChildFailedError report. Now: one paragraph, the failing rank's log, arco's exit code."""
    root = make_nnunet(tmp_path / "nn", cases=4)
    cut(root / "imagesTr" / "case_003_0000.nii.gz", 0.6)
    sets = ["engine.device=cpu", "schedule.batch_labeled=2", "schedule.batch_unlabeled=2", "data.labeled=2",
            f"data.root={root}"]  # fmt: skip
    argv = train(tmp_path, *sets, extra=("--method", "supervised", "--iterations", "1", "--nproc", "2"),
                 config="nnunet")  # fmt: skip
    proc = _run(argv, timeout=240)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr
    assert err.count("arco: error:") == 1 and "case_003_0000.nii.gz: cannot read NIfTI" in err, err
    log = Path(err.split("its log: ")[1].split(")")[0])
    assert log.is_file() and "Traceback" in log.read_text()  # the details are kept for --debug-like digging
    assert (log.parent / "torchrun.log").is_file()
    shutil.rmtree(log.parent)  # kept by arco for the user after a failure; this test's copy is not needed


def test_subprocess_config_errors_have_no_traceback(tmp_path):
    path = study_file(tmp_path, compare_to=["sampler", "ns"])
    proc = _run(["study", str(path), "--out", str(tmp_path / "s"), "--dry-run"], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "st.yaml" in proc.stderr, proc.stderr
    (tmp_path / "scan.nii.gz").write_bytes(GZIP)
    proc = _run(["train", "--config", str(tmp_path / "scan.nii.gz"), "--out", str(tmp_path / "r")], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "scan.nii.gz" in proc.stderr, proc.stderr
