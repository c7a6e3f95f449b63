"""Configuration: presets, stages, overrides, --method / --iterations, errors that name the key, every field read."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import pytest

import arco
from arco._checks import ConfigError
from arco.config import RunConfig, StageConfig, apply_overrides, load_config, presets, to_dict
from arco.config.load import build_config
from arco.engine import ScheduleConfig
from arco.methods import get_method

SRC = Path(arco.__file__).parent


def test_presets_load_and_acdc_has_paper_settings():
    assert {"phantom2d", "phantom3d", "acdc", "la", "mni152", "nnunet", "demo"} <= set(presets())
    for name in presets():
        load_config(name)
    acdc = load_config("acdc")
    assert acdc.data.patch_size == (256, 256)
    assert [s.name for s in acdc.stages] == ["pretrain", "finetune"]
    pre, fine = acdc.stage("pretrain"), acdc.stage("finetune")
    assert (fine.schedule.batch_labeled, fine.schedule.batch_unlabeled) == (4, 4)
    assert (pre.schedule.batch_labeled, pre.schedule.batch_unlabeled) == (3, 3)  # the reference's 3 + 3
    assert pre.schedule.iterations == fine.schedule.iterations == 30000
    assert (pre.schedule.nesterov, fine.schedule.nesterov) == (False, True)  # Nesterov in stage 2 only
    f = fine.params
    assert (f.lambda_contrast, f.lambda_unsup, f.lambda_nn) == (0.01, 1.0, 1.0)
    assert (f.num_queries, f.num_negatives, f.tau, f.confidence, f.sampler) == (256, 512, 0.5, 0.97, "sg")
    assert (f.contrast, tuple(f.bank_size), f.unsup_weighting) == ("reference", (50000, 30000), "ratio")
    assert acdc.model.dim == 496 and pre.params.queue_size == 36  # the five UNet levels fused: 256+128+64+32+16
    la = load_config("la")
    assert la.model.arch == "vnet" and la.model.dim == 16 and la.stage("finetune").params.sampler == "sag"
    assert la.stage("pretrain").schedule.iterations == la.stage("finetune").schedule.iterations == 6000
    assert (la.stage("pretrain").schedule.batch_labeled, la.stage("finetune").schedule.batch_labeled) == (1, 2)


def test_flat_stage_overrides_reach_schedule_or_params():
    cfg = load_config(
        "phantom2d",
        [
            "finetune.sampler=sag",
            "finetune.iterations=7",
            "finetune.lr=0.02",
            "finetune.params.num_queries=32",
            "finetune.schedule.batch_labeled=3",
            "data.patch_size=[96, 96]",
            "engine.deterministic=true",
            "schedule.lr=0.05",
        ],
    )
    fine, pre = cfg.stage("finetune"), cfg.stage("pretrain")
    assert fine.params.sampler == "sag" and fine.params.num_queries == 32
    assert (fine.schedule.iterations, fine.schedule.lr, fine.schedule.batch_labeled) == (7, 0.02, 3)
    assert pre.schedule.lr == 0.05  # the run's schedule is every stage's default
    assert cfg.data.patch_size == (96, 96) and cfg.engine.deterministic is True


def test_method_replaces_the_stages_and_keeps_matching_preset_settings():
    sup = load_config("demo", method="supervised")
    assert [(s.name, s.method) for s in sup.stages] == [("supervised", "supervised")]
    assert sup.stages[0].schedule.iterations == 1800 and sup.method == "supervised"
    ns = load_config("demo", method="arco-ns")
    assert ns.stage("finetune").params.sampler == "ns"
    assert ns.stage("finetune").params.confidence == load_config("demo").stage("finetune").params.confidence
    # a recipe stage the config does not list: schedule.iterations (one stage's length), or its share of a budget
    with pytest.warns(UserWarning, match=r"stages pretrain, finetune train schedule.iterations each.*budget=N"):
        fresh = build_config({"schedule": {"iterations": 100}}, method="arco")
    assert [s.schedule.iterations for s in fresh.stages] == [100, 100]
    shared = build_config({"schedule": {"iterations": 100}, "budget": 100}, method="arco")
    assert [s.schedule.iterations for s in shared.stages] == [50, 50] and shared.budget == 100
    bcp = load_config("acdc", ["budget=40000", "selftrain.iterations=5"], method="bcp")
    assert [s.schedule.iterations for s in bcp.stages] == [10000, 5]  # 1:3 of the budget; a stage's own length wins
    assert load_config("demo", ["budget=900"], method="supervised").stages[0].schedule.iterations == 900
    with pytest.raises(ConfigError, match="budget must be >= 1"):
        load_config("demo", ["budget=0"])


def test_a_recipe_with_shares_warns_only_when_its_stages_get_no_length():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [s.schedule.iterations for s in load_config("demo", method="bcp", iterations=5).stages] == [5, 5]
        sized = load_config("demo", ["pretrain.iterations=3", "selftrain.schedule.iterations=4"], method="bcp")
        assert [s.schedule.iterations for s in sized.stages] == [3, 4]
        assert [s.schedule.iterations for s in load_config("demo", ["budget=8"], method="bcp").stages] == [2, 6]
        load_config("demo", method="supervised")  # one stage, share 1: nothing to split
    assert not [w for w in caught if "budget=N" in str(w.message)]
    with pytest.warns(UserWarning, match=r"stages selftrain train schedule.iterations each \(iterations is one"):
        half = load_config("demo", ["pretrain.iterations=3"], method="bcp")
    assert [s.schedule.iterations for s in half.stages] == [3, 1800]


def _flat(stage: dict) -> dict:
    """A nested stage mapping in the flat form of arco 0.1's config files."""
    return (
        {k: v for k, v in stage.items() if k not in ("schedule", "params")}
        | stage.get("schedule", {})
        | stage.get("params", {})
    )


@pytest.mark.parametrize("preset", presets())
def test_presets_separate_schedule_and_params_and_the_old_flat_form_reads_the_same(preset):
    from arco.config import read_yaml

    raw, base = read_yaml(preset)
    for stage in raw.get("stages") or []:
        assert set(stage) <= {"name", "method", "init", "init_checkpoint", "schedule", "params"}, (preset, stage)
    old = {**raw, "stages": [_flat(s) for s in raw.get("stages") or []]}
    assert to_dict(build_config(old, base_dir=base)) == to_dict(load_config(preset))
    cfg = load_config(preset, method="supervised")  # iterations: one stage's length in every preset
    assert cfg.stages[0].schedule.iterations == cfg.schedule.iterations


def test_print_config_says_what_each_part_means_and_reads_back(tmp_path, capsys):
    from arco.cli import main

    assert main(["train", "--config", "acdc", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# The resolved config") and "iterations is\n#   that stage's length" in text
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert to_dict(load_config(str(path))) == to_dict(load_config("acdc"))


def test_no_method_names_a_parameter_like_a_stage_or_schedule_key():
    from arco.config.schema import STAGE_KEYS
    from arco.methods import list_methods

    reserved = {*STAGE_KEYS, "schedule", "params", *(f.name for f in dataclasses.fields(ScheduleConfig))}
    for name in list_methods(kind="method"):
        assert not reserved & {f.name for f in dataclasses.fields(get_method(name).config_class)}, name


def test_iterations_sets_every_stage():
    cfg = load_config("demo", iterations=3)
    assert [s.schedule.iterations for s in cfg.stages] == [3, 3]
    with pytest.raises(ConfigError, match="--iterations"):
        load_config("demo", iterations=0)


def test_demo_extends_phantom2d_and_merges_stages_by_name():
    demo, base = load_config("demo"), load_config("phantom2d")
    assert demo.data.dataset == base.data.dataset == "phantom2d"
    assert demo.data.patch_size != base.data.patch_size
    # demo does not restate grid or the banks: they come from the defaults; its queries override phantom2d's
    assert demo.stage("finetune").params.bank_size is None and demo.stage("finetune").params.grid == 4
    assert demo.stage("finetune").params.num_queries == 64 and base.stage("finetune").params.num_queries == 128


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("finetune.sampl=sag", r"finetune\.sampl.*did you mean 'finetune\.sampler'"),
        ("finetun.sampler=sag", r"'finetun'.*did you mean 'finetune'"),
        ("finetune.num_queries=abc", r"finetune\.num_queries.*integer"),
        ("engine.deterministic=3", r"engine\.deterministic.*true or false"),
        ("schedule.lr=fast", r"schedule\.lr.*number"),
        ("schedule.lr=-1", r"schedule.lr must be > 0"),
        ("finetune.iterations=0", r"schedule.iterations must be >= 1"),
        ("data.patch_size=64", r"data\.patch_size.*list"),
        ("data.labeled=0", r"data.labeled='0' gives an empty labeled set"),
        ("data.labeled=1.5", r"data.labeled: a fraction must be in \(0, 1\]"),
        ("eval.compat=medpy", r"eval.compat must be one of"),
        ("finetune.init_checkpoint=first", r"init_checkpoint must be one of"),
        ("optim.learning_rate=0.1", r"optim\.learning_rate"),
        ("method=arcoo", r"unknown method 'arcoo'.*did you mean 'arco'"),
        ("nonsense", r"KEY=VALUE"),
    ],
)
def test_bad_keys_and_values_name_the_key_when_read(override, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        load_config("phantom2d", [override])


def test_unknown_preset_and_section_suggest():
    with pytest.raises(ConfigError, match="did you mean 'phantom2d'"):
        load_config("phantom2")
    with pytest.raises(ConfigError, match="did you mean 'schedule'"):
        build_config({"schedul": {}})


def test_resolved_config_reloads_to_the_same_run(tmp_path):
    import yaml

    cfg = load_config("acdc", ["finetune.sampler=sag"])
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(str(p)) == cfg


def test_yaml_file_with_extends(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("extends: acdc\nstages:\n  - name: finetune\n    method: arco-finetune\n    sampler: ns\n")
    cfg = load_config(str(p))
    assert cfg.stage("finetune").params.sampler == "ns" and cfg.data.dataset == "acdc"
    assert cfg.stage("finetune").params.num_queries == 256  # the rest of acdc's finetune stage is kept


def test_apply_overrides_does_not_touch_input():
    raw = {"data": {"labeled": "3"}}
    out = apply_overrides(raw, ["data.labeled=1"])
    assert raw["data"]["labeled"] == "3" and out["data"]["labeled"] == 1


def _fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f.name
        tp = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if tp is not None and dataclasses.is_dataclass(tp):
            yield from _fields(tp, prefix + f.name + ".")


def test_every_config_field_is_read():
    """Each field is read as ``<something>.<field>`` in library code outside its own dataclass definition."""
    from arco.methods import list_methods

    code = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    fields = list(_fields(RunConfig)) + list(_fields(StageConfig)) + list(_fields(ScheduleConfig))
    for name in list_methods(kind="method"):
        fields += list(_fields(get_method(name).config_class, f"{name}."))
    unread = [full for full, name in fields if not re.search(rf"\.{name}\b", code)]
    assert not unread, f"config fields nothing reads: {unread}"


@pytest.mark.parametrize("sampler", ["sga", "sg-ref", "sag-ref"])
def test_training_sampler_is_checked_when_the_config_is_read(sampler):
    # sg-ref / sag-ref are study-only strategies of arco.sampling.sample; training must reject them up front.
    with pytest.raises(ValueError, match="finetune.sampler must be one of 'ns', 'sg', 'sag'"):
        load_config("phantom2d", [f"finetune.sampler={sampler}"])


def test_plugins_are_loaded_before_stages_are_read(tmp_path, scratch_registry):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    cfg = build_config({"plugins": [str(plugin)], "schedule": {"iterations": 4}}, method="plugin-mean-consistency")
    assert cfg.stages[0].params.weight == 0.25 and cfg.plugins == (str(plugin),)
    with pytest.raises(ConfigError, match="plug-in file .* does not exist"):
        build_config({"plugins": ["missing_plugin.py"]})
    with pytest.raises(ConfigError, match="plug-in module 'no_such_module_xyz' cannot be imported"):
        build_config({"plugins": ["no_such_module_xyz"]})


PLUGIN = '''
from dataclasses import dataclass
import torch
from arco.losses import SupervisedLoss
from arco.methods import MethodBase, StepOutput, register_method


@dataclass(frozen=True)
class Cfg:
    weight: float = 0.25


@register_method
class MeanConsistency(MethodBase):
    """A user's own method: L_sup + weight * MSE between the softmax of two noisy views of unlabeled images."""

    name = "plugin-mean-consistency"
    config_class = Cfg
    description = "test plug-in: supervised + consistency between two noisy views"
    paper = "(a user's own method)"
    loss_names = ("loss_sup", "loss_cons")
    init_components = ("student",)

    def __init__(self, cfg, num_classes, spatial_dims, model):
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.sup = SupervisedLoss()

    def training_step(self, batch, step):
        out = self.student(torch.cat([batch.image_l, batch.image_u]))
        bl = batch.image_l.shape[0]
        loss_sup = self.sup(out.logits[:bl], batch.label_l)
        noisy = batch.image_u + 0.1 * torch.randn(batch.image_u.shape, generator=self.generator)
        with torch.no_grad():
            target = self.student(noisy).logits.softmax(1)
        loss_cons = ((out.logits[bl:].softmax(1) - target) ** 2).mean()
        loss = loss_sup + self.cfg.weight * loss_cons
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach()})
'''
