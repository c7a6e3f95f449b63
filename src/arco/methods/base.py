"""The method contract (:class:`Method`, described in docs/design.md, "The method contract") and
:class:`MethodBase`, the plumbing most methods build on.

A method is one file: a frozen config dataclass and a class registered with
:func:`arco.methods.registry.register_method`. It owns its networks, heads and losses and turns a batch into a loss;
the engine does everything else (backward, optimiser, precision, checkpoints, validation, DDP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "CONTRACT",
    "CONTRACT_ATTRIBUTES",
    "RENAMED_MEMBERS",
    "ROLES",
    "Batch",
    "StepOutput",
    "Method",
    "MethodBase",
    "ModelConfig",
    "StudentMethod",
    "build_backbone",
    "check_model_config",
]


@dataclass(frozen=True)
class ModelConfig:
    """The segmentation network and the width of the training-only heads.

    Attributes:
        arch: registered model name (``"unet"`` 2D, ``"vnet"`` 3D).
        dim: width D of the representation head and of the embeddings (paper: 512; 16-64 in 3D, 64-128 on
            CPU).
        hidden_dim: hidden width of the projector/predictor MLPs.
        in_channels: image channels (set from the data when a run is built).
        n_filters: base width of the VNet (16 as in UA-MT; smaller for quick CPU tests). The UNet has no such
            setting: a config giving another value with ``arch: unet`` is rejected (`check_model_config`).
        heads: ARCO's global (and stage-1 local) heads: ``linear`` (two linear layers, the reference code) or
            ``nonlinear`` (a ReLU between them, the paper's "non-linear projector"); no BatchNorm in either.
    """

    arch: str = "unet"
    dim: int = 512
    hidden_dim: int = 512
    in_channels: int = 1
    n_filters: int = 16
    heads: str = "linear"


def check_model_config(cfg: ModelConfig) -> None:
    """Reject a ``model`` section that names an unknown network or sets a key the network does not take (a
    ``model.n_filters`` other than the default on a UNet would be silently ignored).

    Raises:
        ConfigError: naming the key, its value, the network and the fix.
    """
    from arco._checks import ConfigError, did_you_mean
    from arco.models import MODELS

    if cfg.arch not in MODELS:
        raise ConfigError(
            f"model.arch={cfg.arch!r} is not a registered network{did_you_mean(cfg.arch, MODELS.names())}; "
            f"networks: {', '.join(MODELS.names())}"
        )
    for key in ("dim", "hidden_dim", "in_channels", "n_filters"):
        if int(getattr(cfg, key)) < 1:
            raise ConfigError(f"model.{key} must be a positive integer, got {getattr(cfg, key)}")
    default = ModelConfig.__dataclass_fields__["n_filters"].default
    if cfg.n_filters != default and cfg.arch != "vnet":  # build_backbone passes n_filters to the VNet only
        raise ConfigError(
            f"model.n_filters={cfg.n_filters} does not apply to model.arch={cfg.arch!r}: only the VNet has a base "
            "width (n_filters), and it would be silently ignored here. Drop model.n_filters, or set model.arch=vnet "
            "(3D data)"
        )


def build_backbone(
    cfg: ModelConfig, num_classes: int, spatial_dims: int, **extra: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the registered segmentation network; return it with its ``{"arch", "kwargs"}`` (stored in
    checkpoints so ``arco predict`` can rebuild it without the method). ``extra`` are further constructor
    arguments (e.g. ``up_mode="bilinear"`` for a second decoder style)."""
    from arco.models import MODELS

    kwargs: dict[str, Any] = {"in_channels": int(cfg.in_channels), "num_classes": int(num_classes)}
    if cfg.arch == "vnet":
        kwargs["n_filters"] = int(cfg.n_filters)
    kwargs.update(extra)
    net = MODELS.build(cfg.arch, **kwargs)
    if getattr(net, "spatial_dims", spatial_dims) != spatial_dims:
        raise ValueError(
            f"model.arch {cfg.arch!r} is a {net.spatial_dims}D network but the data is {spatial_dims}D; "
            "use 'unet' for 2D data and 'vnet' for 3D data"
        )
    return net, {"arch": cfg.arch, "kwargs": kwargs}


@dataclass
class Batch:
    """One training batch.

    ``image_l (B_l, C_in, *S)`` float and ``label_l (B_l, *S)`` int64 are the labeled part; ``image_u (B_u, C_in,
    *S)`` the weakly augmented unlabeled images (``None`` for methods that need none). ``position_l (B_l,)`` /
    ``position_u (B_u,)`` float: where a 2D slice lies in its volume (slice index / slice count, in [0, 1)), when
    the dataset knows (GCL's partitions); ``None`` otherwise.
    """

    image_l: torch.Tensor
    label_l: torch.Tensor
    image_u: torch.Tensor | None = None
    position_l: torch.Tensor | None = None
    position_u: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            self.image_l.to(device, non_blocking=True),
            self.label_l.to(device, non_blocking=True),
            move(self.image_u),
            move(self.position_l),
            move(self.position_u),
        )


class StepOutput(NamedTuple):
    """``loss``: scalar tensor to minimise; ``logs``: detached scalar tensors named in the method's
    ``loss_names``/``metric_names``, averaged on the device by the engine."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


ROLES = ("trainable", "frozen", "state")


@runtime_checkable
class Method(Protocol):
    """The method contract: everything the engine, the pipeline and the registry use, DDP included.

    Declared by the class (read by :func:`arco.methods.registry.register_method` and the engine):

    - ``name``, ``config_class`` (a dataclass: the method's parameters), ``description``, ``paper``;
    - ``loss_names`` / ``metric_names``: the scalars ``training_step`` logs;
    - ``init_components``: the components a previous stage's checkpoint initialises;
    - ``segmenter``: the component that segments (validation, test, ``arco predict``);
    - ``needs_unlabeled``, ``spatial_dims`` (supported dimensions) and ``grad_clip`` (default max gradient norm,
      0 = none).

    Built as ``cls(cfg, num_classes=..., spatial_dims=..., model=ModelConfig(...))``. The engine then calls
    ``setup`` once (again after loading weights), per iteration ``training_step`` -> (backward, optimiser step) ->
    ``after_optimizer_step``, ``set_training`` around validation, and ``method_state`` / ``load_method_state``
    with the checkpoints; it saves, loads, moves, averages (DDP) and checksums the modules that ``components``
    returns. Under DDP the engine wraps every trainable component in ``DistributedDataParallel`` and hands the
    wrappers to ``bind_replicas``: from then on the method must call those in place of the plain modules (whose
    parameters, buffers and checkpoint keys stay the same). A method never calls ``backward()``, steps an
    optimiser, writes files or syncs with the host.
    """

    name: str
    loss_names: tuple[str, ...]
    metric_names: tuple[str, ...]
    init_components: tuple[str, ...]
    segmenter: str
    needs_unlabeled: bool
    grad_clip: float

    def setup(self, device: torch.device, seed: int, total_steps: int = 1) -> None:
        """Move everything to ``device``, seed the method's generator, learn the stage's length."""

    def components(self, role: str | None = None) -> dict[str, nn.Module]:
        """The method's modules by name (every one is checkpointed), or those of one role: ``trainable``
        (optimised; wrapped for DDP), ``frozen`` (EMA teachers: eval mode, no gradients) or ``state`` (buffers
        only, e.g. a loss's memory bank)."""

    def bind_replicas(self, replicas: Mapping[str, nn.Module]) -> None:
        """Call ``replicas[name]`` wherever the method calls trainable component ``name`` (DDP)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (``"params"``, optionally ``"lr"`` and ``"optimizer"``)."""

    def set_training(self, mode: bool) -> None:
        """Training (True) or evaluation (False) mode of the components; frozen ones stay in evaluation mode."""

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """The loss of one batch (and the logged scalars, detached tensors)."""

    def after_optimizer_step(self, step: int) -> None:
        """Updates after the optimiser step: EMA teachers, queues and banks."""

    def segmentation_network(self) -> nn.Module:
        """The network that segments (component ``segmenter``)."""

    def segmentation_spec(self) -> dict[str, Any]:
        """``{"arch", "kwargs"}`` that rebuild :meth:`segmentation_network` (stored in checkpoints)."""

    def method_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond the components' weights (the generator's state)."""

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`method_state`."""


#: The contract's members a method class must define (what :func:`arco.methods.registry.register_method` checks):
#: the attributes the registry and the engine read, and the methods the engine calls.
CONTRACT_ATTRIBUTES = (*Method.__annotations__, "config_class", "description", "paper", "spatial_dims")
CONTRACT = tuple(n for n, v in vars(Method).items() if not n.startswith("_") and callable(v))
#: Names of the method API before the contract was written down (they collided with torch's ``nn.Module``), with
#: their replacements; a class that still defines one is rejected at registration with this table.
RENAMED_MEMBERS = {
    "add_module": "add_component",
    "modules": "components",
    "train": "set_training",
    "state_dict": "method_state",
    "load_state_dict": "load_method_state",
    "predictor": "segmentation_network",
    "predictor_spec": "segmentation_spec",
    "predict_module": "segmenter",
    "init_modules": "init_components",
    "wrap_trainable": "bind_replicas",
    "trainable_names": "components('trainable')",
}


class MethodBase:
    """Shared plumbing for :class:`Method`: named components with roles, backbones with their rebuild specs, EMA
    teachers, device placement, the method's random generator and its state.

    Subclasses declare their components in ``__init__`` with :meth:`add_backbone`, :meth:`add_component` and
    :meth:`add_teacher` (each returns the module) and reach them as attributes of the same name
    (``self.student(x)``): an attribute lookup resolves a component name to the module, or under DDP to the
    replica the engine bound (:meth:`bind_replicas`), so a method never assigns its components to attributes
    (doing so is an error). ``self.generator`` (seeded by ``setup``) drives every random choice a method makes on
    the device (samplers, CutMix, jitter), so runs are reproducible and resumable. ``self.total_steps`` (set by
    ``setup``) lets a method schedule its weights (ramp-ups) over the stage.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = type(None)
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    loss_names: ClassVar[tuple[str, ...]] = ("loss_sup",)
    metric_names: ClassVar[tuple[str, ...]] = ()
    init_components: ClassVar[tuple[str, ...]] = ()
    segmenter: ClassVar[str] = "student"
    needs_unlabeled: ClassVar[bool] = True
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    #: Default max global gradient norm when ``optim.grad_clip`` is not set (0: no clipping, as the papers' codes).
    grad_clip: ClassVar[float] = 0.0

    def __init__(self, cfg: Any, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"Expected `num_classes` to be an integer >= 2, but got {num_classes!r}.")
        if spatial_dims not in type(self).spatial_dims:
            raise ValueError(
                f"method {type(self).name!r} supports spatial_dims {type(self).spatial_dims}, but the data is "
                f"{spatial_dims}D"
            )
        self.cfg = cfg
        self.model_cfg = model
        self.num_classes = int(num_classes)
        self.dims = int(spatial_dims)
        self._components: dict[str, nn.Module] = {}
        self._roles: dict[str, str] = {}
        self._calls: dict[str, nn.Module] = {}  # what ``self.<name>`` returns: the module or its DDP replica
        self._specs: dict[str, dict[str, Any]] = {}
        self._ema_pairs: list[tuple[str, str]] = []
        self.device = torch.device("cpu")
        self.generator = torch.Generator()
        self.total_steps = 1

    def __getattr__(self, name: str) -> Any:
        # Called only when ordinary lookup fails: component names resolve here (never stored as attributes).
        calls = self.__dict__.get("_calls")
        if calls is not None and name in calls:
            return calls[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_components", ()):
            raise AttributeError(
                f"{type(self).__name__}.{name} is a component: reach it as self.{name} without assigning it "
                "(add_component / add_backbone / add_teacher return the module for local use)"
            )
        object.__setattr__(self, name, value)

    # -------------------------------------------------------------------------------------------- building
    def add_backbone(self, name: str, trainable: bool = True, **extra: Any) -> nn.Module:
        """Build the configured segmentation network as component ``name`` (its spec is stored for rebuilding);
        ``extra`` are further constructor arguments of the network (``up_mode=...``)."""
        net, spec = build_backbone(self.model_cfg, self.num_classes, self.dims, **extra)
        self._specs[name] = spec
        return self.add_component(name, net, "trainable" if trainable else "frozen")

    def add_component(self, name: str, module: nn.Module, role: str = "trainable") -> nn.Module:
        """Declare component ``name`` with ``role`` (one of :data:`ROLES`: ``trainable`` optimised, ``frozen`` no
        gradients and eval mode, ``state`` buffers only); it is checkpointed under ``name`` and reached as
        ``self.<name>``. Returns ``module``."""
        if name in self._components:
            raise ValueError(f"{type(self).__name__}: component {name!r} is added twice")
        if role not in ROLES:
            raise ValueError(f"add_component(): role must be 'trainable', 'frozen' or 'state', got {role!r}")
        if not name.isidentifier() or name in self.__dict__ or hasattr(type(self), name):
            raise ValueError(
                f"{type(self).__name__}: component name {name!r} must be an identifier that no attribute or method "
                "of the class uses (components are reached as self.<name>)"
            )
        self._components[name] = module
        self._roles[name] = role
        self._calls[name] = module
        return module

    def add_teacher(self, name: str, student: str) -> nn.Module:
        """A frozen copy of component ``student`` kept as its EMA by :meth:`update_teachers`."""
        from arco.models import make_teacher

        teacher = self.add_component(name, make_teacher(self._components[student]), "frozen")
        if student in self._specs:
            self._specs[name] = self._specs[student]
        self._ema_pairs.append((name, student))
        return teacher

    def update_teachers(self, momentum: float) -> None:
        """EMA of every (teacher, student) pair added with :meth:`add_teacher` (parameters and BN buffers)."""
        from arco.models import ema_update

        for t, s in self._ema_pairs:
            ema_update(self._components[t], self._components[s], momentum)

    @property
    def ema_pairs(self) -> list[tuple[str, str]]:
        return list(self._ema_pairs)

    # ------------------------------------------------------------------------------------- the contract
    def components(self, role: str | None = None) -> dict[str, nn.Module]:
        if role is not None and role not in ROLES:
            raise ValueError(f"components(): role must be one of {', '.join(ROLES)} or None, got {role!r}")
        return {n: m for n, m in self._components.items() if role is None or self._roles[n] == role}

    def bind_replicas(self, replicas: Mapping[str, nn.Module]) -> None:
        for name, replica in replicas.items():
            if self._roles.get(name) != "trainable":
                raise ValueError(f"bind_replicas(): {name!r} is not a trainable component of {type(self).__name__}")
            self._calls[name] = replica

    def setup(self, device: torch.device, seed: int, total_steps: int = 1) -> None:
        """Move every component to ``device``, freeze the frozen ones and (re)seed the method's generator."""
        self.device = torch.device(device)
        self.total_steps = max(int(total_steps), 1)
        for m in self._components.values():
            m.to(self.device)
        for m in self.components("frozen").values():
            m.requires_grad_(False)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed) + 7919)

    def set_training(self, mode: bool) -> None:
        """Trainable components follow ``mode``; frozen ones (EMA teachers) always stay in eval mode, so that
        teachers give eval-mode pseudo-labels (docs/methods.md)."""
        for name, m in self._components.items():
            m.train(mode and self._roles[name] != "frozen")

    def param_groups(self) -> list[dict[str, Any]]:
        """One SGD group with every trainable parameter. Methods with a second optimiser (a discriminator) add
        groups with ``"optimizer": "adam"`` and their own ``"lr"``; ``"lr"`` is the group's base learning rate
        that the schedule scales (default: the stage's ``lr``)."""
        params = [p for m in self.components("trainable").values() for p in m.parameters() if p.requires_grad]
        return [{"params": params}]

    def training_step(self, batch: Batch, step: int) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_optimizer_step(self, step: int) -> None:
        return None

    def segmentation_network(self) -> nn.Module:
        return self._components[self.segmenter]

    def segmentation_spec(self) -> dict[str, Any]:
        return self._specs[self.segmenter]

    def method_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().cpu()}

    def load_method_state(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu().to(torch.uint8))


class StudentMethod(MethodBase):
    """A method around one segmentation network, component ``student`` (its ``segmenter``, and what a previous
    stage's checkpoint initialises). It is declared first; subclasses add their teachers and heads after it."""

    init_components: ClassVar[tuple[str, ...]] = ("student",)

    def __init__(self, cfg: Any, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
