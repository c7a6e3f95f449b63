"""Training methods plugged into the one engine (STYLE.md §3), registered by name in ``METHODS``.

``METHODS.build(name, cfg=..., num_classes=..., spatial_dims=..., model=...)`` returns a :class:`Method`.
"""

from __future__ import annotations

from arco.methods.arco import ArcoFinetuneConfig, ArcoFinetuneMethod, ArcoPretrainConfig, ArcoPretrainMethod
from arco.methods.base import Batch, Method, MethodBase, ModelConfig, StepOutput
from arco.methods.supervised import SupervisedConfig, SupervisedMethod
from arco.registry import Registry

__all__ = [
    "METHODS",
    "METHOD_CONFIGS",
    "Batch",
    "Method",
    "MethodBase",
    "ModelConfig",
    "StepOutput",
    "SupervisedConfig",
    "SupervisedMethod",
    "ArcoPretrainConfig",
    "ArcoPretrainMethod",
    "ArcoFinetuneConfig",
    "ArcoFinetuneMethod",
]

METHODS: Registry = Registry("method")
METHODS.register("supervised")(SupervisedMethod)
METHODS.register("arco-pretrain")(ArcoPretrainMethod)
METHODS.register("arco-finetune")(ArcoFinetuneMethod)

#: The config dataclass each method takes.
METHOD_CONFIGS = {
    "supervised": SupervisedConfig,
    "arco-pretrain": ArcoPretrainConfig,
    "arco-finetune": ArcoFinetuneConfig,
}
