"""The optimisers of a stage, built from a method's parameter groups.

Most methods have one SGD group. Methods with an adversary (DAN, SASSNet) add groups with ``"optimizer": "adam"``
and their own base ``"lr"`` (and any other per-group option of the optimiser, e.g. Adam's ``"betas"``); one
optimiser is built per kind. The learning-rate schedule scales every group's base learning rate by the same
factor, except groups marked ``"scheduled": False``, which keep their base rate (the discriminators of SSL4MIS /
SASSNet train at a constant 1e-4).

Every optimiser uses torch's fused kernel when the parameters' device and dtypes support it (one kernel for all
parameters), else the multi-tensor ``foreach`` one; never the per-parameter Python loop.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from arco._checks import choice
from arco.engine.config import OptimConfig

__all__ = ["Optimizers", "OPTIMIZERS", "fast_kwargs"]

OPTIMIZERS = ("sgd", "adam")


def fast_kwargs(groups: list[dict[str, Any]]) -> dict[str, bool]:
    """``{"fused": True}`` when every parameter is a floating tensor on one device type with a fused kernel, else
    ``{"foreach": True}``."""
    params = [p for g in groups for p in g["params"]]
    types = {p.device.type for p in params}
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch: fused kernels on CUDA only
        supported = {"cuda"}
    fusable = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
    if len(types) == 1 and types <= supported and all(p.dtype in fusable for p in params):
        return {"fused": True}
    return {"foreach": True}


def _build(kind: str, groups: list[dict[str, Any]], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    def make(**fast: bool) -> torch.optim.Optimizer:
        copies = [dict(g) for g in groups]  # the constructor writes its defaults into the groups
        if kind == "sgd":
            return torch.optim.SGD(
                copies, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, **fast
            )
        return torch.optim.Adam(copies, lr=lr, **fast)

    try:
        return make(**fast_kwargs(groups))
    except (RuntimeError, ValueError, TypeError):  # this torch/device has no such kernel after all
        return make(foreach=True)


class Optimizers:
    """One optimiser per kind named in the groups (``sgd`` by default, ``adam`` on request)."""

    def __init__(self, groups: list[dict[str, Any]], cfg: OptimConfig, lr: float) -> None:
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for g in groups:
            g = dict(g)
            kind = choice("param group optimizer", g.pop("optimizer", "sgd"), OPTIMIZERS)
            g.setdefault("lr", lr)
            g["base_lr"] = g["lr"]
            g["scheduled"] = bool(g.get("scheduled", True))
            by_kind.setdefault(kind, []).append(g)
        if not any(p.requires_grad for gs in by_kind.values() for g in gs for p in g["params"]):
            raise ValueError("the method has no trainable parameters")
        self.cfg = cfg
        self.kinds = sorted(by_kind)
        self.optimizers: list[torch.optim.Optimizer] = []
        for kind in self.kinds:
            self.optimizers.append(_build(kind, by_kind[kind], cfg, lr))
        self.lr = lr

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for opt in self.optimizers for g in opt.param_groups for p in g["params"]]

    def set_lr_factor(self, factor: float) -> None:
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * (factor if g["scheduled"] else 1.0)
        # The logged lr is the segmentation network's (SGD) one, not a discriminator's.
        main = self.optimizers[self.kinds.index("sgd")] if "sgd" in self.kinds else self.optimizers[0]
        self.lr = main.param_groups[0]["lr"]

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler, clip: float = 0.0) -> torch.Tensor:
        """Unscale, clip the global gradient norm to ``clip`` (0: no clipping), step; returns the norm before
        clipping (a device tensor, no host sync), which the engine logs."""
        for opt in self.optimizers:
            scaler.unscale_(opt)
        grads = [p for p in self.params if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(grads, clip if clip > 0 else math.inf) if grads else torch.zeros(())
        for opt in self.optimizers:
            scaler.step(opt)
        scaler.update()
        return norm.detach()

    def state_dict(self) -> dict[str, Any]:
        return {kind: opt.state_dict() for kind, opt in zip(self.kinds, self.optimizers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for kind, opt in zip(self.kinds, self.optimizers):
            opt.load_state_dict(state[kind])
