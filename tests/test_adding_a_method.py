"""Adding a method from the contract alone: a class that implements only what docs/design.md ("The method
contract") lists, without MethodBase, registers, is found by list_methods, and trains through the engine on one
process and under DDP on CPU (2 gloo ranks, identical replicas)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from _ddp import spawn
from _tiny import MODEL2D, tiny_data
from arco.methods import registry
from arco.methods.base import Batch, Method, ModelConfig, StepOutput, build_backbone


@dataclass(frozen=True)
class PlainConfig:
    weight: float = 1.0


class PlainMethod:
    """Cross-entropy on the labeled images with one network: every member of the contract, nothing else."""

    name = "plain-contract"
    config_class = PlainConfig
    description = "a method written from the contract alone (test)"
    paper = "none"
    loss_names = ("loss_ce",)
    metric_names = ()
    init_components = ("net",)
    segmenter = "net"
    needs_unlabeled = False
    spatial_dims = (2,)
    grad_clip = 0.0

    def __init__(self, cfg: PlainConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        self.cfg = cfg
        self.net, self.spec = build_backbone(model, num_classes, spatial_dims)
        self.call = self.net  # what training_step calls: the network, or its DDP replica once bound

    def setup(self, device: torch.device, seed: int, total_steps: int = 1) -> None:
        self.net.to(device)

    def components(self, role: str | None = None) -> dict[str, nn.Module]:
        return {"net": self.net} if role in (None, "trainable") else {}

    def bind_replicas(self, replicas: Mapping[str, nn.Module]) -> None:
        self.call = replicas["net"]

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.net.parameters())}]

    def set_training(self, mode: bool) -> None:
        self.net.train(mode)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        loss = self.cfg.weight * F.cross_entropy(self.call(batch.image_l).logits.float(), batch.label_l)
        return StepOutput(loss, {"loss_ce": loss.detach()})

    def after_optimizer_step(self, step: int) -> None:
        pass

    def segmentation_network(self) -> nn.Module:
        return self.net

    def segmentation_spec(self) -> dict[str, Any]:
        return self.spec

    def method_state(self) -> dict[str, Any]:
        return {}

    def load_method_state(self, state: dict[str, Any]) -> None:
        pass


def _train(rank: int, world: int, out: Path, iterations: int) -> None:
    from arco.engine import EngineConfig, OptimConfig, ScheduleConfig, StageSpec, fit, seed_everything

    seed_everything(0)
    method = PlainMethod(PlainConfig(), 3, 2, MODEL2D)
    before = {k: v.clone() for k, v in method.net.state_dict().items()}
    engine = EngineConfig(device="cpu", log_every=1, val_every=0, progress=False, threads=1)
    summary = fit(
        method,
        tiny_data(2),
        StageSpec("plain", ScheduleConfig(iterations=iterations, batch_labeled=2, batch_unlabeled=2, lr=0.05)),
        optim=OptimConfig(),
        engine=engine,
        run_dir=out / "run",
        config={"test": True},
    )
    after = method.net.state_dict()
    trained = any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    torch.save({"summary": summary, "state": dict(after), "trained": trained}, out / f"rank{rank}.pt")


def test_a_method_of_the_contract_alone_registers_and_satisfies_the_protocol():
    before = dict(registry._ENTRIES)
    try:
        registry.register_method(PlainMethod)
        assert registry.list_methods("plain-*") == ["plain-contract"]
        assert registry.get_method("plain-contract") is PlainMethod
        assert isinstance(registry.create("plain-contract", num_classes=3, spatial_dims=2, model=MODEL2D), Method)
    finally:
        registry._ENTRIES.clear()
        registry._ENTRIES.update(before)
    assert not hasattr(PlainMethod, "add_component")  # no MethodBase plumbing


def test_a_method_of_the_contract_alone_trains_on_one_process(tmp_path):
    _train(0, 1, tmp_path, 3)
    result = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert result["summary"]["completed_iterations"] == 3 and result["trained"]


def test_a_method_of_the_contract_alone_trains_under_ddp_on_cpu(tmp_path):
    spawn(_train, 2, tmp_path, 2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert a["summary"]["completed_iterations"] == 2 and a["trained"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])  # the replicas stayed identical
