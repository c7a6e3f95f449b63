"""Study caches across code changes: stage fingerprints include the version of the code that shapes the weights
(package version, shared sources, the method's own sources) and leave out settings that change no weight; a resumed
study retrains exactly the stages whose fingerprint changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _study import write_study
from arco.config import load_config
from arco.methods import get_method
from arco.study import run_study
from arco.study.code import code_version, method_files
from arco.study.plan import NEUTRAL_ENGINE, fingerprints

PLUGIN = """
from arco.methods import register_method
from arco.methods.supervised import SupervisedMethod


@register_method
class CodeChangeMethod(SupervisedMethod):
    name = "test-code-change"
    description = "the supervised baseline under another name, in a plug-in file a test edits"
"""


def test_settings_that_change_no_weight_leave_the_fingerprints_alone():
    base = fingerprints(load_config("demo"))
    neutral = ["engine.log_every=7", "engine.num_workers=3", "engine.save_every=5", "engine.threads=1",
               "engine.progress=false", "engine.save_every_minutes=2"]  # fmt: skip
    assert {s.split("=")[0].split(".")[1] for s in neutral} == set(NEUTRAL_ENGINE)
    assert fingerprints(load_config("demo", neutral)) == base
    assert fingerprints(load_config("demo", ["engine.val_every=50"])) != base
    changed = fingerprints(load_config("demo", ["finetune.sampler=ns"]))
    assert changed[0] == base[0] and changed[1] != base[1]  # stage 1 shared, stage 2 not


def test_the_code_version_follows_the_methods_imports(monkeypatch):
    files = {p.name for p in method_files(get_method("arco-finetune"))}
    assert files == {"arco.py", "arco_pretrain.py", "_arco_common.py", "_common.py"}
    assert {p.name for p in method_files(get_method("gcl-finetune"))} == {"gcl.py", "supervised.py"}
    version = code_version("supervised")
    assert set(version) == {"arco", "shared", "method"} and version != code_version("bcp-selftrain")
    base = fingerprints(load_config("demo"))
    import arco

    monkeypatch.setattr(arco, "__version__", "999")
    assert not set(fingerprints(load_config("demo"))) & set(base)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from arco.data.phantom import ensure_phantom

    return ensure_phantom(str(tmp_path_factory.mktemp("phantom") / "p2d"), "phantom2d", True, 6, 0, 32)


def _checkpoints(run: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(run.rglob("checkpoints/*.pt"))}


def test_a_resumed_study_retrains_the_stages_whose_method_source_changed(tmp_path, phantom):
    plugin = tmp_path / "mine.py"
    plugin.write_text(PLUGIN)
    base = tmp_path / "base.yaml"
    base.write_text(f"extends: demo\nplugins: [{plugin}]\n")
    grid = {"method": {"sup": {"method": "supervised"}, "mine": {"method": "test-code-change"}}}
    path = write_study(tmp_path / "s.yaml", phantom, grid, base=str(base))
    out = tmp_path / "study"
    assert not run_study(str(path), out, launcher="inline")["runs"]["failed"]
    sup, mine = (out / "runs" / a / "seed0" for a in ("sup", "mine"))
    before = {"sup": _checkpoints(sup), "mine": _checkpoints(mine)}
    record = json.loads((mine / "test-code-change" / "fingerprint.json").read_text())
    assert record["method"] == "test-code-change" and set(record["code"]) == {"arco", "shared", "method"}

    lines: list[str] = []
    run_study(str(path), out, resume=True, launcher="inline", overrides=["engine.log_every=2"], report=lines.append)
    assert _checkpoints(sup) == before["sup"] and _checkpoints(mine) == before["mine"]  # log_every: nothing
    assert not (out / "stale").exists() and not [line for line in lines if "trains again" in line]

    plugin.write_text(PLUGIN + "\n# a change to the method's source\n")
    summary = run_study(str(path), out, resume=True, launcher="inline", report=lines.append)
    assert not summary["runs"]["failed"] and summary["runs"]["finished"] == 2
    assert _checkpoints(sup) == before["sup"]  # the other method's stages are kept
    after = _checkpoints(mine)
    assert after.keys() == before["mine"].keys() and all(after[p] != t for p, t in before["mine"].items())
    stale = list((out / "stale").iterdir())
    assert [p.name for p in stale] == [f"runs-mine-seed0-test-code-change-{record['fingerprint']}"]
    assert any("test-code-change: trained for another fingerprint" in line for line in lines)
    new = json.loads((mine / "test-code-change" / "fingerprint.json").read_text())
    assert new["fingerprint"] != record["fingerprint"] and new["code"]["method"] != record["code"]["method"]
