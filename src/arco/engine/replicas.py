"""DistributedDataParallel for any method, by the roles its components declare.

The engine wraps each *trainable* component of a method (``method.components("trainable")``) in
:class:`~torch.nn.parallel.DistributedDataParallel` and hands the method a *stand-in* for it
(``method.bind_replicas``; :class:`arco.methods.base.MethodBase` then resolves ``self.<name>`` to it). The
stand-in is an instance of a subclass of the module's own class that shares the module's ``__dict__``: parameters,
buffers, submodules, ``training`` and attributes are the module's own (``self.student.feature_channels``,
``self.student.decoder``, ``.train()``, ``.named_parameters()`` work as before, with the same names), while calling
it, or calling a method its class defines (``encode``, ``decode``, ``forward_at``), runs through DDP's forward so that
DDP synchronises the gradients. ``method.components()`` keeps the plain modules: checkpoints, EMA teachers and
parameter groups never see DDP.

What DDP cannot see, the engine does by hand after the backward pass: a module whose DDP forward did not run with
gradients this step (a method calling its submodules directly, e.g. ``for block in self.student.decoder``) has its
gradients averaged with one all-reduce. After the optimiser step the floating buffers of the trainable modules
(BatchNorm running statistics) are averaged across ranks, so that the EMA teachers, updated next from the
students, are identical on every rank. ``engine.sync_bn`` turns the BatchNorm layers of the trainable modules
into synchronised ones (:class:`torch.nn.SyncBatchNorm` on CUDA; :class:`CpuSyncBatchNorm` on CPU, where
torch's does not run).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["CpuSyncBatchNorm", "Replicas", "convert_sync_bn"]

logger = logging.getLogger(__name__)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def _global_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode BatchNorm of ``x`` with the statistics of the global batch (all ranks). Per-rank sums and sums
    of squares are all-reduced in float64 by a differentiable all-reduce, so the gradient is that of BatchNorm over
    the global batch. Running statistics move towards the global ones only when at least two rows count."""
    c = x.shape[1]
    xf = x.double()
    dims = [0, *range(2, x.dim())]
    s1, s2 = xf.sum(dims), (xf * xf).sum(dims)
    count = xf.new_full((1,), float(x.numel() // c))
    stats = _AllReduceSum.apply(torch.cat([s1, s2, count]))
    n = stats[-1]
    mean = stats[:c] / n.clamp_min(1.0)
    var = (stats[c : 2 * c] / n.clamp_min(1.0) - mean.square()).clamp_min(0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            update = n >= 2
            bn.num_batches_tracked.add_(update.long())
            if bn.momentum is None:
                factor = torch.where(update, 1.0 / bn.num_batches_tracked.clamp_min(1).double(), 0.0)
            else:
                factor = torch.where(update, bn.momentum, 0.0).double()
            unbiased = var * n / (n - 1).clamp_min(1.0)
            for buf, stat in ((bn.running_mean, mean), (bn.running_var, unbiased)):
                buf.copy_((buf.double() * (1 - factor) + factor * stat.detach()).to(buf.dtype))
    shape = (1, c) + (1,) * (x.dim() - 2)
    y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(torch.promote_types(x.dtype, torch.float32) if x.dtype != torch.float64 else x.dtype)


def _in_group_training(bn: _BatchNorm) -> bool:
    return bn.training and dist.is_available() and dist.is_initialized()


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks), on any device.

    Same parameters, buffers and ``state_dict`` keys as ``nn.BatchNorm1d/2d/3d``. Used for CPU (gloo) runs; CUDA
    runs use :class:`torch.nn.SyncBatchNorm`.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"CpuSyncBatchNorm: expected at least 2D input (N, C, ...), got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not _in_group_training(self):
            return super().forward(x)
        return _global_batch_norm(self, x)


def _sync_copy(cls: type[_BatchNorm], bn: _BatchNorm) -> _BatchNorm:
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.training = bn.training
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var = bn.running_mean, bn.running_var
    new.num_batches_tracked = bn.num_batches_tracked
    return new


def convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace the BatchNorm layers of ``module`` in place by synchronised ones sharing their parameters and buffers
    (torch's on CUDA, :class:`CpuSyncBatchNorm` elsewhere); returns ``module`` (a new one if it is itself a BN)."""
    if isinstance(module, (CpuSyncBatchNorm, nn.SyncBatchNorm)):
        return module
    if isinstance(module, _BatchNorm):
        if device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return _sync_copy(CpuSyncBatchNorm, module)
    for name, child in module.named_children():
        new = convert_sync_bn(child, device)
        if new is not child:
            module.add_module(name, new)
    return module


class _Dispatch(nn.Module):
    """What DDP wraps: calls the module, or one of its methods named by ``_arco_method``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(self, *args: Any, _arco_method: str | None = None, **kwargs: Any) -> Any:
        if _arco_method is None:
            return self.inner(*args, **kwargs)
        return getattr(self.inner, _arco_method)(*args, **kwargs)


class _Replica:
    """A DDP-wrapped module and whether its DDP forward ran with gradients this step."""

    def __init__(self, name: str, module: nn.Module, ddp: nn.Module | None) -> None:
        self.name, self.module, self.ddp, self.armed = name, module, ddp, False

    def call(self, method: str | None, args: tuple, kwargs: dict) -> Any:
        if torch.is_grad_enabled():
            self.armed = True
        if method is not None:
            kwargs = {**kwargs, "_arco_method": method}
        return self.ddp(*args, **kwargs)


_STAND_INS: dict[type, type] = {}
# Buffers are averaged after each step (Replicas.sync_buffers), not broadcast from rank 0 at every forward.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def _routed(name: str) -> Any:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return object.__getattribute__(self, "_arco_replica").call(name, args, kwargs)

    call.__name__ = name
    return call


def _stand_in_type(cls: type) -> type:
    """A subclass of ``cls`` whose call and own (non-torch) public methods go through the replica's DDP."""
    if cls not in _STAND_INS:
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass.__module__.split(".")[0] in ("torch", "builtins"):
                continue
            names |= {n for n, v in vars(klass).items() if not n.startswith("_") and n != "forward"
                      and inspect.isfunction(v)}  # fmt: skip
        space: dict[str, Any] = {n: _routed(n) for n in sorted(names)}
        space["__slots__"] = ("_arco_replica",)
        space["__call__"] = lambda self, *a, **k: object.__getattribute__(self, "_arco_replica").call(None, a, k)
        _STAND_INS[cls] = type(f"Distributed{cls.__name__}", (cls,), space)
    return _STAND_INS[cls]


def _stand_in(replica: _Replica) -> nn.Module:
    module = replica.module
    proxy = object.__new__(_stand_in_type(type(module)))
    object.__setattr__(proxy, "__dict__", module.__dict__)  # the module's own state, shared
    object.__setattr__(proxy, "_arco_replica", replica)
    return proxy


def _all_reduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    """Average ``tensors`` in place across ranks, one all-reduce per dtype."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat)
        flat.div_(world)
        for t, v in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(v)


class Replicas:
    """The DDP wrapping of a method's trainable modules (call after the method is set up and restored).

    Args:
        method: a built :class:`~arco.methods.base.Method` (set up on ``device``, weights loaded).
        device: this rank's device.
        sync_bn: convert the trainable modules' BatchNorm layers to synchronised BatchNorm first.

    Per step the engine calls :meth:`begin_step`, then (after ``backward``) :meth:`sync_grads`, then (after the
    optimiser step) :meth:`sync_buffers`.
    """

    def __init__(self, method: Any, device: torch.device, sync_bn: bool) -> None:
        self.world = dist.get_world_size()
        self.replicas: list[_Replica] = []
        trainable = method.components("trainable")
        self.buffers = [b for m in trainable.values() for b in m.buffers() if b.is_floating_point()]
        if sync_bn:
            for name, module in trainable.items():
                if convert_sync_bn(module, device) is not module:
                    raise ValueError(
                        f"engine.sync_bn: module {name!r} is itself a BatchNorm layer; wrap it in a module"
                    )
        ids = [device.index] if device.type == "cuda" else None
        stand_ins = {}
        for name, module in trainable.items():
            if not any(p.requires_grad for p in module.parameters()):
                continue
            ddp = nn.parallel.DistributedDataParallel(_Dispatch(module), device_ids=ids, **_NO_BUFFER_SYNC)
            replica = _Replica(name, module, ddp)
            self.replicas.append(replica)
            stand_ins[name] = _stand_in(replica)
        method.bind_replicas(stand_ins)
        logger.info("DDP over %d ranks: %s", self.world, ", ".join(r.name for r in self.replicas))

    def begin_step(self) -> None:
        for r in self.replicas:
            r.armed = False

    def sync_grads(self) -> None:
        """Average the gradients DDP did not see (modules used this step without a DDP forward with grad)."""
        grads = [p.grad for r in self.replicas if not r.armed for p in r.module.parameters() if p.grad is not None]
        if grads:
            _all_reduce_mean(grads, self.world)

    def sync_buffers(self) -> None:
        """Average the trainable modules' floating buffers (BN running statistics) so every rank holds the same."""
        if self.buffers:
            with torch.no_grad():
                _all_reduce_mean(self.buffers, self.world)
