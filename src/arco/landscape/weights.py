"""The loss surface around a run's final weights along two filter-normalised random directions (Li, Xu, Taylor,
Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018; paper App. M).

``f(α, β) = L(θ + α δ + β η)`` on a ``steps x steps`` grid of ``α, β ∈ [-span, span]`` (the centre ``(0, 0)`` is a
grid point and its value is the loss at the checkpoint, exactly). Directions (Li et al. Sec. 4, "filter
normalization"): ``δ`` and ``η`` are Gaussian, drawn by a generator seeded with ``seed``; for every parameter
tensor with two or more dimensions, each *filter* (a slice along the first dimension, as their code does for
every layer) is rescaled to the norm of the same filter of the weights, ``δ_i <- δ_i ||θ_i|| / ||δ_i||``;
one-dimensional parameters (biases, BatchNorm's scale and shift) get a zero direction and BatchNorm's running
statistics stay as trained (their ``ignore='biasbn'`` setting).

Perturbed weights: the segmentation network (the run's predictor; for ARCO's stage 2 its student), and for ARCO's
stage 2 also the representation head, the linear pair and a framework's predictor (drawn after the network's, so the
network's directions do not depend on the run's kind). Losses, networks in eval mode (as Li et al. evaluate):

- ``loss_sup``: ``CE + Dice`` (weight 1, every run alike) of each validation case, averaged over the cases (2D: the
  case's slices resized to the patch size as one batch; 3D: one window of the patch size centred on the case's
  foreground, zero-padded);
- ``loss_contrast`` (ARCO stage-2 runs only): the run's L_contrast (``arco`` or the framework's objective) on
  ``batches`` real stage-2 training batches (pseudo-labels and strong views built once by the unperturbed EMA
  teacher, as the training step builds them), each with the same generator seed at every grid point, banks and
  queues as at the end of training (``last.pt``), not updated.

Summary: ``sharpness(r) = mean over the grid points with 0 < sqrt(α² + β²) <= r of f(α, β) - f(0, 0)``: the mean
rise of the loss within radius ``r`` (default ``span / 2``, at least one grid spacing) in direction units; a flatter
minimum gives a smaller number. Compare runs with the same ``seed``, ``span``, ``steps`` and ``r``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "WeightLandscape",
    "LoadedModel",
    "filter_normalized_directions",
    "grid_coordinates",
    "surface",
    "sharpness",
    "load_model",
    "sup_loss_fn",
    "contrast_loss_fn",
    "weight_landscape",
]


@dataclass
class LoadedModel:
    """What the surface needs from a run: the perturbed parameters, the networks, the data and, for ARCO's stage 2,
    the method (``run``: :class:`arco.contrast_variance.LoadedRun`)."""

    network: nn.Module
    params: list[nn.Parameter]
    data: Any
    checkpoint: Path
    stage_method: str
    run: Any = None
    threads: int = 0  # the run's engine.threads (0: torch's default)


@dataclass
class WeightLandscape:
    """The grid: ``coords (steps,)``, ``losses[name] (steps, steps)`` with ``[i, j] = f(coords[i], coords[j])``."""

    coords: np.ndarray
    losses: dict[str, np.ndarray]
    radius: float
    seed: int
    checkpoint: str
    stage_method: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def centre(self) -> dict[str, float]:
        m = len(self.coords) // 2
        return {k: float(v[m, m]) for k, v in self.losses.items()}

    def sharpness(self) -> dict[str, float]:
        return {k: sharpness(self.coords, v, self.radius) for k, v in self.losses.items()}


def filter_normalized_directions(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """One random direction per parameter tensor, filter-normalised (module docstring)."""
    out = []
    for p in params:
        w = p.detach()
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device, w.dtype)
        if w.dim() <= 1:
            d.zero_()
        else:
            dn = d.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))
            wn = w.flatten(1).norm(dim=1).view_as(dn)
            d.mul_(wn / (dn + 1e-10))
        out.append(d)
    return out


def grid_coordinates(steps: int, span: float) -> np.ndarray:
    """``steps`` (odd, >= 3) coordinates ``span (i - m) / m``, ``m = steps // 2``: symmetric, with an exact 0."""
    if steps < 3 or steps % 2 == 0:
        raise ValueError(f"steps must be an odd integer >= 3 (the centre is a grid point), got {steps}")
    if not span > 0:
        raise ValueError(f"span must be > 0, got {span}")
    m = steps // 2
    return np.array([span * (i - m) / m for i in range(steps)], dtype=np.float64)


def sharpness(coords: np.ndarray, values: np.ndarray, radius: float) -> float:
    """Mean of ``values - values[centre]`` over the grid points at distance ``(0, radius]`` from the centre."""
    a, b = np.meshgrid(coords, coords, indexing="ij")
    r = np.sqrt(a**2 + b**2)
    ring = (r > 0) & (r <= radius + 1e-12)
    if not ring.any():
        raise ValueError(f"radius {radius} holds no grid point besides the centre (spacing {coords[1] - coords[0]})")
    m = len(coords) // 2
    return float(np.mean(values[ring] - values[m, m]))


@torch.no_grad()
def surface(
    params: Sequence[nn.Parameter],
    directions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
    coords: np.ndarray,
    losses: dict[str, Callable[[], float]],
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``{name: (steps, steps)}``: every loss at ``θ + α δ + β η`` for ``α = coords[i]``, ``β = coords[j]``; the
    parameters are restored afterwards (also on error)."""
    base = [p.detach().clone() for p in params]
    out = {k: np.full((len(coords), len(coords)), np.nan) for k in losses}
    try:
        for i, a in enumerate(coords):
            for j, b in enumerate(coords):
                for p, w, d1, d2 in zip(params, base, *directions):
                    p.copy_(w + float(a) * d1 + float(b) * d2)
                for k, fn in losses.items():
                    out[k][i, j] = fn()
                if progress is not None:
                    progress(1)
    finally:
        for p, w in zip(params, base):
            p.copy_(w)
    return out


def load_model(checkpoint: str, device: str = "cpu", data_root: str | None = None) -> LoadedModel:
    """The final weights of any run stage (``last.pt`` when it exists, else the given / best checkpoint)."""
    import dataclasses

    from arco.checkpoint import load_checkpoint, load_predictor, resolve_checkpoint
    from arco.config import build_config
    from arco.contrast_variance import load_run
    from arco.data import build_data

    path = resolve_checkpoint(checkpoint)
    if path.name == "best.pt" and (path.parent / "last.pt").is_file():
        path = path.parent / "last.pt"
    state = load_checkpoint(path)
    cfg = build_config(state["config"]) if isinstance(state.get("config"), dict) else None
    method = cfg.stage(state["stage"]).method if cfg is not None and "stage" in state else ""
    if method == "arco-finetune":
        run = load_run(path, device=device, data_root=data_root)
        m = run.method
        heads = [m.rep_head, m.rep_pair, *([m.framework_head()] if m.framework_head() is not None else [])]
        net = m.segmentation_network()
        params = [*net.parameters(), *(p for h in heads for p in h.parameters())]
        return LoadedModel(net, params, run.data, path, method, run, cfg.engine.threads)
    if cfg is None:
        raise ValueError(f"{path} holds no run config; give a run folder written by arco train")
    if data_root:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_root)))
    net, _ = load_predictor(path, map_location=device)
    net.to(device)
    return LoadedModel(net, list(net.parameters()), build_data(cfg.data), path, method or "?", None, cfg.engine.threads)


def _sup_batches(data, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One ``(image, label)`` batch per validation case (module docstring)."""
    from arco.landscape.slices import slice_input

    out = []
    for v in data.val:
        if v.label is None:
            continue
        if data.spatial_dims == 2:
            parts = [slice_input(v, k, 2, data.patch_size) for k in range(np.asarray(v.label).shape[0])]
            x, y = torch.cat([p.image for p in parts]), torch.cat([p.label for p in parts])
        else:
            label = np.asarray(v.label)
            fg = np.argwhere(label > 0)
            centre = int((fg[:, 0].min() + fg[:, 0].max()) // 2) if len(fg) else label.shape[0] // 2
            p = slice_input(v, centre, 3, data.patch_size)
            x, y = p.image, p.label
        out.append((x.to(device), y.to(device)))
    if not out:
        raise ValueError("the run's validation split has no labeled case: loss_sup needs one")
    return out


def sup_loss_fn(network: nn.Module, data, device: torch.device) -> Callable[[], float]:
    """``() -> float``: the mean ``CE + Dice`` over the validation cases (module docstring)."""
    from arco.losses import supervised_loss

    batches = _sup_batches(data, device)

    @torch.no_grad()
    def fn() -> float:
        network.eval()
        total = 0.0
        for x, y in batches:
            out = network(x)
            total += float(supervised_loss(getattr(out, "logits", out).float(), y))
        return total / len(batches)

    return fn


def contrast_loss_fn(run, batches: int, seed: int) -> Callable[[], float]:
    """``() -> float``: the run's L_contrast averaged over ``batches`` fixed stage-2 batches at fixed draws."""
    from arco.engine import BatchStream

    m, sched = run.method, run.stage.schedule
    m.set_training(False)
    stream = BatchStream(run.data.labeled, run.data.unlabeled, sched.batch_labeled, sched.batch_unlabeled, seed, 0,
                         batches)  # fmt: skip
    prepared = []
    with torch.no_grad():
        for i, batch in enumerate(x.to(m.device) for x in stream):
            views = m.strong_views(batch, torch.Generator(device=m.device).manual_seed(seed * 7919 + i))
            prepared.append((batch, views))

    @torch.no_grad()
    def fn() -> float:
        m.set_training(False)
        total = 0.0
        for b, (batch, views) in enumerate(prepared):
            out = m.student_forward(batch.image_l, views.image)
            gen = torch.Generator(device=m.device).manual_seed(seed * 10_007 + b)
            total += float(m.contrast_loss(views, out, batch.label_l, run.iteration, gen, update=False))
        return total / len(prepared)

    return fn


def weight_landscape(
    model: LoadedModel,
    steps: int = 11,
    span: float = 1.0,
    seed: int = 0,
    batches: int = 2,
    radius: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> WeightLandscape:
    """The surface of ``loss_sup`` (every run) and ``loss_contrast`` (ARCO stage 2) around ``model``'s weights."""
    coords = grid_coordinates(steps, span)
    radius = max(span / 2, coords[1] - coords[0]) if radius is None else float(radius)
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    device = next(iter(model.params)).device
    gen = torch.Generator().manual_seed(int(seed))
    directions = (filter_normalized_directions(model.params, gen), filter_normalized_directions(model.params, gen))
    notes = []
    start = time.perf_counter()
    # The training batches' weak augmentation draws from the global generator: seeded, the caller's state kept.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        losses = {"loss_sup": sup_loss_fn(model.network, model.data, device)}
        if model.run is not None:
            losses["loss_contrast"] = contrast_loss_fn(model.run, batches, seed)
        else:
            notes.append(f"loss_contrast: not an ARCO stage-2 run ({model.stage_method}); only loss_sup")
        values = surface(model.params, directions, coords, losses, progress)
    seconds = time.perf_counter() - start
    if not all(math.isfinite(v) for arr in values.values() for v in arr.flat):
        notes.append("some grid points gave a non-finite loss (far from the weights the network may diverge)")
    return WeightLandscape(coords, values, radius, int(seed), str(model.checkpoint), model.stage_method, seconds, notes)
