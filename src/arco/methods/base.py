"""The method contract (STYLE.md §3): what a training method supplies to the one engine.

A method owns its networks, heads and losses and turns a batch into a loss. It never calls ``backward()``,
steps the optimiser, writes files, or syncs with the host (no ``.item()``); the engine does all of that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Batch", "StepOutput", "Method", "MethodBase", "ModelConfig", "build_backbone"]


@dataclass(frozen=True)
class ModelConfig:
    """The segmentation network and the width of the training-only heads.

    Attributes:
        arch: registered model name (``"unet"`` 2D, ``"vnet"`` 3D).
        dim: width D of the representation head and of the embeddings (paper: 512; 16-64 in 3D, 64-128 on
            CPU).
        hidden_dim: hidden width of the projector/predictor MLPs.
        in_channels: image channels.
        n_filters: base width of the VNet (16 as in UA-MT; smaller for quick CPU tests). Ignored by the UNet.
    """

    arch: str = "unet"
    dim: int = 512
    hidden_dim: int = 512
    in_channels: int = 1
    n_filters: int = 16


def build_backbone(cfg: ModelConfig, num_classes: int, spatial_dims: int) -> tuple[nn.Module, dict[str, Any]]:
    """Build the registered segmentation network; return it with its ``{"arch", "kwargs"}`` (stored in
    checkpoints).
    """
    from arco.models import MODELS

    kwargs: dict[str, Any] = {"in_channels": int(cfg.in_channels), "num_classes": int(num_classes)}
    if cfg.arch == "vnet":
        kwargs["n_filters"] = int(cfg.n_filters)
    net = MODELS.build(cfg.arch, **kwargs)
    if getattr(net, "spatial_dims", spatial_dims) != spatial_dims:
        raise ValueError(
            f"model.arch {cfg.arch!r} is a {net.spatial_dims}D network but the data is {spatial_dims}D; "
            "use 'unet' for 2D data and 'vnet' for 3D data"
        )
    return net, {"arch": cfg.arch, "kwargs": kwargs}


@dataclass
class Batch:
    """One training batch on the device.

    ``image_l (B_l, 1, *S)`` float and ``label_l (B_l, *S)`` int64 are the labeled part; ``image_u (B_u, 1,
    *S)`` the
    weakly augmented unlabeled images (``None`` for supervised-only methods).
    """

    image_l: torch.Tensor
    label_l: torch.Tensor
    image_u: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.image_l.to(device, non_blocking=True),
            self.label_l.to(device, non_blocking=True),
            None if self.image_u is None else self.image_u.to(device, non_blocking=True),
        )


class StepOutput(NamedTuple):
    """``loss``: scalar tensor to minimise; ``logs``: detached scalar tensors (``loss_sup``, ...) averaged by
    the engine.
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


@runtime_checkable
class Method(Protocol):
    """What the engine needs from a method (see STYLE.md §3)."""

    needs_unlabeled: bool
    predictor_spec: dict[str, Any]  # {"arch", "kwargs"} of predictor(), stored in checkpoints

    def setup(self, device: torch.device, seed: int) -> None: ...

    def train(self, mode: bool = True) -> None: ...

    def modules(self) -> dict[str, nn.Module]: ...

    def param_groups(self) -> list[dict[str, Any]]: ...

    def training_step(self, batch: Batch, step: int) -> StepOutput: ...

    def after_optimizer_step(self, step: int) -> None: ...

    def predictor(self) -> nn.Module: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def generator_state(gen: torch.Generator) -> torch.Tensor:
    """State of a generator as a CPU uint8 tensor (checkpoint-safe with ``weights_only=True``)."""
    return gen.get_state().cpu()


def set_generator_state(gen: torch.Generator, state: torch.Tensor) -> None:
    gen.set_state(state.cpu().to(torch.uint8))


class MethodBase:
    """Shared plumbing: the module dict, device placement, the method's random generator and its state.

    Subclasses fill ``self._modules`` (name -> module; everything checkpointed, losses with their banks
    included),
    list the trainable names in ``self._trainable`` and the EMA teachers in ``self._frozen``.
    """

    needs_unlabeled = True

    def __init__(self, num_classes: int, spatial_dims: int) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"Expected `num_classes` to be an integer >= 2, but got {num_classes!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"Expected `spatial_dims` to be 2 or 3, but got {spatial_dims!r}.")
        self.num_classes = int(num_classes)
        self.spatial_dims = int(spatial_dims)
        self._modules: dict[str, nn.Module] = {}
        self._trainable: list[str] = []
        self._frozen: list[str] = []
        self.device = torch.device("cpu")
        self.generator = torch.Generator()

    def setup(self, device: torch.device, seed: int) -> None:
        """Move every module to ``device`` and (re)seed the method's generator (samplers, CutMix, jitter)."""
        self.device = torch.device(device)
        for m in self._modules.values():
            m.to(self.device)
        for name in self._frozen:
            for p in self._modules[name].parameters():
                p.requires_grad_(False)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed) + 7919)

    def train(self, mode: bool = True) -> None:
        """Trainable modules follow ``mode``; EMA teachers always stay in eval mode (SPEC §3: eval-mode
        pseudo-labels).
        """
        for name, m in self._modules.items():
            m.train(mode and name not in self._frozen)

    def modules(self) -> dict[str, nn.Module]:
        return dict(self._modules)

    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for n in self._trainable for p in self._modules[n].parameters() if p.requires_grad]
        return [{"params": params}]

    def after_optimizer_step(self, step: int) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu().to(torch.uint8))
