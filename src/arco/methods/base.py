"""The method contract (STYLE.md §3): what a training method supplies to the one engine.

A method is one file: a frozen config dataclass and a :class:`MethodBase` subclass registered with
:func:`arco.methods.registry.register_method`. The class declares what the rest of arco reads from the registry:

- ``name``, ``description`` (one line), ``paper`` (citation) and ``config_class``;
- ``loss_names`` / ``metric_names``: the scalars its ``training_step`` logs (the columns of ``log.csv``);
- ``init_modules``: the modules a previous stage's checkpoint initialises (stage 2 of ARCO from stage 1);
- ``predict_module``: the module that segments at validation, test and ``arco predict``;
- ``needs_unlabeled`` and ``spatial_dims`` (2D, 3D or both).

A method owns its networks, heads and losses and turns a batch into a loss. It never calls ``backward()``, steps an
optimiser, writes files or syncs with the host (no ``.item()``); the engine does all of that. The engine calls, in
this order: ``setup(device, seed, total_steps)``, then per iteration ``training_step(batch, step)`` ->
``after_optimizer_step(step)``; ``train(mode)`` around validation, and ``state_dict()`` / ``load_state_dict()`` for
checkpoints (modules are checkpointed by the engine through ``modules()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Batch", "StepOutput", "Method", "MethodBase", "ModelConfig", "build_backbone", "check_model_config"]


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


@runtime_checkable
class Method(Protocol):
    """What the engine needs from a method (STYLE.md §3)."""

    name: str
    loss_names: tuple[str, ...]
    metric_names: tuple[str, ...]
    init_modules: tuple[str, ...]
    predict_module: str
    needs_unlabeled: bool

    def setup(self, device: torch.device, seed: int, total_steps: int = 1) -> None: ...

    def train(self, mode: bool = True) -> None: ...

    def modules(self) -> dict[str, nn.Module]: ...

    def param_groups(self) -> list[dict[str, Any]]: ...

    def training_step(self, batch: Batch, step: int) -> StepOutput: ...

    def after_optimizer_step(self, step: int) -> None: ...

    def predictor(self) -> nn.Module: ...

    @property
    def predictor_spec(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MethodBase:
    """Shared plumbing: the module dict, backbones with their rebuild specs, EMA teachers, device placement, the
    method's random generator and its state.

    Subclasses call :meth:`add_backbone`, :meth:`add_module` and :meth:`add_teacher` in ``__init__``; everything
    added is checkpointed. ``self.generator`` (seeded by ``setup``) drives every random choice a method makes on the
    device (samplers, CutMix, jitter), so runs are reproducible and resumable. ``self.total_steps`` (set by
    ``setup``) lets a method schedule its weights (ramp-ups) over the stage.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = type(None)
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    loss_names: ClassVar[tuple[str, ...]] = ("loss_sup",)
    metric_names: ClassVar[tuple[str, ...]] = ()
    init_modules: ClassVar[tuple[str, ...]] = ()
    predict_module: ClassVar[str] = "student"
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
        self._modules: dict[str, nn.Module] = {}
        self._trainable: list[str] = []
        self._frozen: list[str] = []
        self._specs: dict[str, dict[str, Any]] = {}
        self._ema_pairs: list[tuple[str, str]] = []
        self.device = torch.device("cpu")
        self.generator = torch.Generator()
        self.total_steps = 1

    # -------------------------------------------------------------------------------------------- building
    def add_backbone(self, name: str, trainable: bool = True, **extra: Any) -> nn.Module:
        """Build the configured segmentation network under ``name`` (its spec is stored for rebuilding); ``extra``
        are further constructor arguments of the network (``up_mode=...``)."""
        net, spec = build_backbone(self.model_cfg, self.num_classes, self.dims, **extra)
        self._specs[name] = spec
        return self.add_module(name, net, "trainable" if trainable else "frozen")

    def add_module(self, name: str, module: nn.Module, role: str = "trainable") -> nn.Module:
        """Register ``module``: ``role`` is ``trainable`` (optimised), ``frozen`` (no gradients, eval mode) or
        ``state`` (buffers only, e.g. a loss with a memory bank)."""
        if name in self._modules:
            raise ValueError(f"{type(self).__name__}: module {name!r} is added twice")
        if role not in ("trainable", "frozen", "state"):
            raise ValueError(f"add_module(): role must be 'trainable', 'frozen' or 'state', got {role!r}")
        self._modules[name] = module
        if role == "trainable":
            self._trainable.append(name)
        elif role == "frozen":
            self._frozen.append(name)
        return module

    def add_teacher(self, name: str, student: str) -> nn.Module:
        """A frozen copy of module ``student`` kept as its EMA by :meth:`update_teachers`."""
        from arco.models import make_teacher

        teacher = self.add_module(name, make_teacher(self._modules[student]), "frozen")
        if student in self._specs:
            self._specs[name] = self._specs[student]
        self._ema_pairs.append((name, student))
        return teacher

    def update_teachers(self, momentum: float) -> None:
        """EMA of every (teacher, student) pair added with :meth:`add_teacher` (parameters and BN buffers)."""
        from arco.models import ema_update

        for t, s in self._ema_pairs:
            ema_update(self._modules[t], self._modules[s], momentum)

    @property
    def ema_pairs(self) -> list[tuple[str, str]]:
        return list(self._ema_pairs)

    @property
    def trainable_names(self) -> tuple[str, ...]:
        """Names of the modules added with role ``trainable`` (those the engine wraps for DDP)."""
        return tuple(self._trainable)

    def wrap_trainable(self, wrap: Callable[[str, nn.Module], nn.Module | None]) -> dict[str, nn.Module]:
        """Let the engine put a wrapper (its DistributedDataParallel stand-in) where the method calls its trainable
        modules: every attribute of the method that is a trainable module (or a list/tuple holding one) is replaced
        by ``wrap(name, module)`` (``None`` leaves it). :meth:`modules` keeps the modules themselves, so checkpoints
        (``state_dict`` keys), EMA teachers and parameter groups are unchanged, and a method keeps calling
        ``self.student(x)``. Returns ``{name: wrapper}``."""
        wrapped = {name: w for name in self._trainable if (w := wrap(name, self._modules[name])) is not None}
        swap = {id(self._modules[name]): w for name, w in wrapped.items()}
        for attr, value in list(vars(self).items()):
            if id(value) in swap:
                setattr(self, attr, swap[id(value)])
            elif isinstance(value, (list, tuple)) and any(id(v) in swap for v in value):
                setattr(self, attr, type(value)(swap.get(id(v), v) for v in value))
        return wrapped

    # ------------------------------------------------------------------------------------- engine seams
    def setup(self, device: torch.device, seed: int, total_steps: int = 1) -> None:
        """Move every module to ``device``, freeze the frozen ones and (re)seed the method's generator."""
        self.device = torch.device(device)
        self.total_steps = max(int(total_steps), 1)
        for m in self._modules.values():
            m.to(self.device)
        for name in self._frozen:
            self._modules[name].requires_grad_(False)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed) + 7919)

    def train(self, mode: bool = True) -> None:
        """Trainable modules follow ``mode``; frozen ones (EMA teachers) always stay in eval mode (SPEC §3:
        eval-mode pseudo-labels)."""
        for name, m in self._modules.items():
            m.train(mode and name not in self._frozen)

    def modules(self) -> dict[str, nn.Module]:
        return dict(self._modules)

    def param_groups(self) -> list[dict[str, Any]]:
        """One SGD group with every trainable parameter. Methods with a second optimiser (a discriminator) add
        groups with ``"optimizer": "adam"`` and their own ``"lr"``; ``"lr"`` is the group's base learning rate
        that the schedule scales (default: the stage's ``lr``)."""
        params = [p for n in self._trainable for p in self._modules[n].parameters() if p.requires_grad]
        return [{"params": params}]

    def training_step(self, batch: Batch, step: int) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_optimizer_step(self, step: int) -> None:
        return None

    def predictor(self) -> nn.Module:
        return self._modules[self.predict_module]

    @property
    def predictor_spec(self) -> dict[str, Any]:
        return self._specs[self.predict_module]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu().to(torch.uint8))
