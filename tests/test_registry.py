"""arco.methods.registry: one namespace of methods and recipes; list_methods, create; stages checked up front."""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import pytest
import torch

import arco.methods.registry as registry
from arco._checks import ConfigError
from arco.methods import (
    MethodBase,
    ModelConfig,
    RecipeStage,
    StepOutput,
    create,
    get_method,
    get_recipe,
    list_methods,
    register_method,
    register_recipe,
)


@dataclass(frozen=True)
class _Cfg:
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")


def _method_class(name: str) -> type:
    class Tiny(MethodBase):
        config_class = _Cfg
        description = "a test method"
        paper = "(test)"
        needs_unlabeled = False

        def __init__(self, cfg, num_classes, spatial_dims, model):
            super().__init__(cfg, num_classes, spatial_dims, model)
            self.add_backbone("student")

        def training_step(self, batch, step):
            loss = self.cfg.weight * self.student(batch.image_l).logits.mean()
            return StepOutput(loss, {"loss_sup": loss.detach()})

    Tiny.name = name
    return Tiny


def test_a_method_and_a_recipe_share_one_namespace(scratch_registry):
    cls = register_method(_method_class("test-reg-one"))
    recipe = register_recipe(
        "test-reg-two",
        (RecipeStage("pre", "supervised"), RecipeStage("main", "test-reg-one", params={"weight": 0.5})),
        "supervised, then the test method",
        "(test)",
    )
    assert list_methods("test-reg-*") == ["test-reg-one", "test-reg-two"]
    assert list_methods("test-reg-*", kind="method") == ["test-reg-one"]
    assert list_methods(["test-reg-t*", "supervised"], kind="recipe") == ["test-reg-two"]
    one = get_recipe("test-reg-one")  # a method is a recipe of one stage, by construction
    assert (
        one.kind == "method" and one.cls is cls and [(s.name, s.method) for s in one.stages] == [("test-reg-one",) * 2]
    )
    assert get_recipe("test-reg-two") is recipe and recipe.kind == "recipe" and get_method("test-reg-one") is cls
    with pytest.raises(ConfigError, match=r"'test-reg-two' is a recipe \(pre: supervised, main: test-reg-one\)"):
        get_method("test-reg-two")


def test_create_builds_a_method_or_a_recipe_stage_with_overrides(scratch_registry):
    register_method(_method_class("test-reg-one"))
    register_recipe("test-reg-two", (RecipeStage("main", "test-reg-one", params={"weight": 0.5}),), "d", "p")
    m = create("test-reg-two", num_classes=3, spatial_dims=2, model=ModelConfig(dim=8))
    assert type(m).name == "test-reg-one" and m.cfg.weight == 0.5 and m.num_classes == 3
    assert create("test-reg-two", num_classes=3, spatial_dims=2, weight=2.0).cfg.weight == 2.0
    assert create("arco-sag", stage="finetune", num_classes=4, spatial_dims=2).cfg.sampler == "sag"
    with pytest.raises(ConfigError, match="has stages pretrain, finetune; create one of them with stage="):
        create("arco", num_classes=4, spatial_dims=2)
    with pytest.raises(ConfigError, match=r"has no parameter 'wieght' \(did you mean 'weight'\?\)"):
        create("test-reg-one", num_classes=3, spatial_dims=2, wieght=1.0)
    with pytest.raises(ConfigError, match="has no stage 'fine'"):
        create("arco", stage="fine", num_classes=4, spatial_dims=2)


@pytest.mark.parametrize(
    ("stages", "error", "match"),
    [
        ([RecipeStage("a", "no-such-method")], KeyError, "'no-such-method' is not a registered method"),
        ([RecipeStage("a", "arco")], KeyError, "'arco' is not a registered method"),  # a recipe is not a stage
        ([RecipeStage("a", "supervised", params={"lr": 1})], KeyError, "has no parameter 'lr'"),
        ([RecipeStage("a", "supervised", params={"loss_weight": -1})], ValueError, "loss_weight must be > 0"),
        ([RecipeStage("a", "supervised"), RecipeStage("a", "supervised")], ValueError, "distinct"),
        ([RecipeStage("a/b", "supervised")], ValueError, "folder name"),
        ([], ValueError, "at least one stage"),
    ],
)
def test_recipe_stages_are_checked_when_registered(scratch_registry, stages, error, match):
    with pytest.raises(error, match=match):
        register_recipe("test-reg-bad", stages, "d", "p")
    assert "test-reg-bad" not in list_methods()


def test_names_are_taken_once_and_old_api_names_are_named(scratch_registry):
    with pytest.raises(KeyError, match="'supervised' is registered already"):
        register_recipe("supervised", (RecipeStage("s", "supervised"),), "d", "p")
    with pytest.raises(KeyError, match="'arco' is registered already"):
        register_method(_method_class("arco"))
    old = _method_class("test-reg-old")
    old.predict_module = "student"

    def modules(self):  # the old, torch-like name of components()
        return {}

    old.modules = modules
    with pytest.raises(TypeError, match=r"old method API; rename modules -> components, predict_module -> segmenter"):
        register_method(old)
    with pytest.raises(TypeError, match="must define description"):
        register_method(type("NoDescription", (_method_class("test-reg-x"),), {"description": ""}))


def test_registry_docstring_examples_run():
    assert doctest.testmod(registry).failed == 0


def test_a_registered_test_method_trains_one_step(scratch_registry):
    register_method(_method_class("test-reg-one"))
    m = create("test-reg-one", num_classes=3, spatial_dims=2, model=ModelConfig(dim=8, hidden_dim=8))
    m.setup(torch.device("cpu"), 0, 1)
    from arco.methods import Batch

    out = m.training_step(Batch(torch.randn(2, 1, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long)), 0)
    assert torch.isfinite(out.loss) and set(out.logs) == {"loss_sup"}
