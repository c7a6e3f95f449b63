"""The training step near the hardware limit: autocast, channels-last memory format and ``torch.compile``.

- **Precision** (``engine.precision``): ``bf16`` autocasts the step on CUDA and on CPU; ``fp16`` (with a
  GradScaler) on CUDA only. Losses are computed in float32 by the loss functions themselves.
- **Channels-last** (``engine.channels_last``): the networks' 4D (2D data) or 5D (3D data) weights and the input
  images are stored NHWC / NDHWC, the layout tensor-core convolutions read without transposes.
- **Compile** (``engine.compile``): the predicting network's ``forward`` is compiled on first use; if compilation
  fails (no compiler, unsupported platform) the step warns once and runs that forward eagerly from then on.

The optimisers use torch's fused (else ``foreach``) kernels (:mod:`arco.engine.optim`). Nothing here reads a
device value on the host: the step has no host synchronisation (tests/test_step.py checks it on CUDA).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import torch
from torch import nn

from arco.methods.base import Batch

__all__ = [
    "amp_dtype",
    "autocast",
    "channels_last",
    "channels_last_batch",
    "compile_forward",
    "match_layouts",
    "memory_format",
]

logger = logging.getLogger(__name__)


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``engine.precision`` on ``device`` (``None`` = fp32); fp16 off CUDA warns, uses fp32."""
    if precision == "fp16" and device.type != "cuda":
        warnings.warn("engine.precision=fp16 is only used on CUDA; training in fp32", stacklevel=3)
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``dtype``, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(spatial_dims: int) -> torch.memory_format:
    """``channels_last`` for 2D data (NHWC), ``channels_last_3d`` for 3D data (NDHWC)."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def channels_last(modules: dict[str, nn.Module], spatial_dims: int) -> None:
    """Store the convolution weights of ``modules`` channels-last, in place (same parameter objects, same
    ``state_dict`` keys; checkpoints load into either layout)."""
    fmt = memory_format(spatial_dims)
    rank = 4 if spatial_dims == 2 else 5
    for m in modules.values():
        for t in (*m.parameters(), *m.buffers()):
            if t.dim() == rank:
                t.data = t.data.contiguous(memory_format=fmt)


def match_layouts(optimizers: list[torch.optim.Optimizer]) -> None:
    """Give optimiser state tensors (momentum restored from a contiguous checkpoint) their parameter's memory
    layout: fused kernels walk parameter, gradient and state in memory order and need one layout."""
    for opt in optimizers:
        for p, state in opt.state.items():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def channels_last_batch(batch: Batch, spatial_dims: int) -> Batch:
    """The batch with its images in the channels-last layout (labels are unchanged)."""
    fmt = memory_format(spatial_dims)

    def conv(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.contiguous(memory_format=fmt)

    return Batch(conv(batch.image_l), batch.label_l, conv(batch.image_u), batch.position_l, batch.position_u)


def compile_forward(module: nn.Module, name: str) -> None:
    """Compile ``module.forward`` in place (its ``state_dict`` keys do not change). The first call compiles; if that
    fails, a warning names the error and ``module`` runs eagerly from then on."""
    if not hasattr(torch, "compile"):
        warnings.warn(f"engine.compile: this torch ({torch.__version__}) has no torch.compile; {name} runs eagerly",
                      stacklevel=2)  # fmt: skip
        return
    eager = module.forward
    try:
        compiled = torch.compile(eager)
    except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
        warnings.warn(f"engine.compile: cannot compile {name} ({exc}); it runs eagerly", stacklevel=2)
        return
    state = {"use": True}

    def forward(*args: Any, **kwargs: Any) -> Any:
        if state["use"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a compiler failure: fall back (a real error re-raises below)
                state["use"] = False
                warnings.warn(
                    f"engine.compile: compiling {name} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                    "it runs eagerly",
                    stacklevel=2,
                )
        return eager(*args, **kwargs)

    module.forward = forward
    logger.info("engine.compile: %s's forward is compiled on first use", name)
