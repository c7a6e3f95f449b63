"""Configuration: presets, overrides, errors that name the key, and every field read somewhere."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import arco
from arco._checks import ConfigError
from arco.config import RunConfig, apply_overrides, from_dict, load_config, presets, to_dict

SRC = Path(arco.__file__).parent


def test_presets_load_and_acdc_has_paper_settings():
    assert {"phantom2d", "phantom3d", "acdc", "la", "mni152", "nnunet", "demo"} <= set(presets())
    for name in presets():
        load_config(name)
    acdc = load_config("acdc")
    assert acdc.data.patch_size == (256, 256)
    assert (acdc.finetune.batch_labeled, acdc.finetune.batch_unlabeled) == (4, 4)
    assert acdc.pretrain.iterations == acdc.finetune.iterations == 30000
    f = acdc.finetune
    assert (f.lambda_contrast, f.lambda_unsup, f.lambda_nn) == (0.01, 1.0, 1.0)
    assert (f.num_queries, f.num_negatives, f.tau, f.confidence, f.sampler) == (256, 512, 0.5, 0.97, "sg")
    assert acdc.model.dim == 512 and acdc.pretrain.queue_size == 36
    assert load_config("la").model.arch == "vnet"


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(
        "phantom2d",
        [
            "finetune.sampler=sag",
            "data.patch_size=[96, 96]",
            "engine.deterministic=true",
            "optim.lr=0.05",
            "finetune.num_queries=32",
        ],
    )
    assert cfg.finetune.sampler == "sag" and cfg.data.patch_size == (96, 96)
    assert cfg.engine.deterministic is True and cfg.optim.lr == 0.05 and cfg.finetune.num_queries == 32


def test_demo_extends_phantom2d():
    demo, base = load_config("demo"), load_config("phantom2d")
    assert demo.data.dataset == base.data.dataset == "phantom2d"
    assert demo.data.patch_size != base.data.patch_size


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("finetune.sampl=sag", r"finetune\.sampl.*did you mean 'finetune\.sampler'"),
        ("finetun.sampler=sag", r"'finetun'.*did you mean 'finetune'"),
        ("finetune.num_queries=abc", r"finetune\.num_queries.*integer"),
        ("engine.deterministic=3", r"engine\.deterministic.*true or false"),
        ("optim.lr=fast", r"optim\.lr.*number"),
        ("data.patch_size=64", r"data\.patch_size.*list"),
        ("stages=[pretrain, finetun]", r"stages.*did you mean 'finetune'"),
        ("nonsense", r"KEY=VALUE"),
    ],
)
def test_bad_keys_and_types_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("phantom2d", [override])


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'phantom2d'"):
        load_config("phantom2")


def test_round_trip():
    cfg = load_config("acdc", ["finetune.sampler=sag"])
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


def test_yaml_file_with_extends(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("extends: acdc\nfinetune:\n  sampler: ns\n")
    cfg = load_config(str(p))
    assert cfg.finetune.sampler == "ns" and cfg.data.dataset == "acdc"


def test_apply_overrides_does_not_touch_input():
    raw = {"finetune": {"sampler": "sg"}}
    out = apply_overrides(raw, ["finetune.sampler=sag"])
    assert raw["finetune"]["sampler"] == "sg" and out["finetune"]["sampler"] == "sag"


def _fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f.name
        tp = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if tp is not None and dataclasses.is_dataclass(tp):
            yield from _fields(tp, prefix + f.name + ".")


def test_every_config_field_is_read():
    """Each field is read as ``<something>.<field>`` in library code outside its own dataclass definition."""
    code = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    unread = [full for full, name in _fields(RunConfig) if not re.search(rf"\.{name}\b", code)]
    assert not unread, f"config fields nothing reads: {unread}"


@pytest.mark.parametrize("sampler", ["sga", "sg-ref", "sag-ref"])
def test_training_sampler_is_checked_when_the_config_is_read(sampler):
    # sg-ref / sag-ref are study-only strategies of arco.sampling.sample; training must reject them up front.
    with pytest.raises(ValueError, match="finetune.sampler must be one of 'ns', 'sg', 'sag'"):
        load_config("phantom2d", [f"finetune.sampler={sampler}"])
