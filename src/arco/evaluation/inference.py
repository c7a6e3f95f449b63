"""Whole-volume inference: 2D slice by slice with resizing, 3D by sliding window.

``predict_fn`` is any callable mapping a float tensor ``(B, C_in, *patch)`` to logits ``(B, C, *patch)`` (or
to an object with a ``.logits`` attribute, such as ``arco.models`` outputs); this module never imports the
models. Images are ``(D, H, W)`` (one channel) or ``(C_in, D, H, W)`` (several, channel first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from arco._checks import choice

__all__ = ["REFERENCE_STRIDE_3D", "predict_volume", "overlap_from_stride"]

# Reference 3D protocol (ARCO / SSL4MIS test_3D_util.py on LA): patch 112x112x80 and stride 18/18/4 in the
# reference (x, y, z) order, i.e. patch (80, 112, 112) and stride (4, 18, 18) in our (D, H, W) array order.
REFERENCE_STRIDE_3D = (4, 18, 18)

PredictFn = Callable[[Any], Any]


def overlap_from_stride(patch_size: Sequence[int], stride: Sequence[int]) -> tuple[float, ...]:
    """Per-axis overlap fraction such that MONAI's ``int(roi * (1 - overlap))`` equals ``stride`` exactly.

    Example:
        >>> [round(o, 4) for o in overlap_from_stride((80, 112, 112), (4, 18, 18))]
        [0.95, 0.8393, 0.8393]
    """
    if len(stride) != len(patch_size) or any(int(s) < 1 or int(s) > int(p) for s, p in zip(stride, patch_size)):
        raise ValueError(
            f"stride must hold {len(patch_size)} integers in 1..patch_size={tuple(patch_size)}, got {tuple(stride)}"
        )
    # The tiny nudge keeps float rounding from turning e.g. 112 * (1 - 94/112) = 17.999... into 17.
    return tuple(1.0 - (int(s) + 1e-6) / int(p) for s, p in zip(stride, patch_size))


def _logits(predict_fn: PredictFn, x: Any) -> Any:
    out = predict_fn(x)
    return out.logits if hasattr(out, "logits") else out


def _predict_2d(
    predict_fn: PredictFn, image: np.ndarray, patch_size: Sequence[int], batch_size: int, device: str, keep_probs: bool
) -> tuple[Any, Any]:
    """Labels ``(D, H, W)`` and, when ``keep_probs``, probabilities ``(C, D, H, W)`` of a ``(C_in, D, H, W)`` image.
    The image is read and moved to ``device`` one batch of slices at a time, so a memory-mapped case is never copied
    whole."""
    import torch
    import torch.nn.functional as F

    _, depth, h, w = image.shape
    patch = tuple(int(s) for s in patch_size)
    labels, chunks = [], []
    for start in range(0, depth, batch_size):
        block = np.array(image[:, start : start + batch_size], dtype=np.float32)  # a copy: memmaps are read-only
        x = torch.as_tensor(block, device=device).transpose(0, 1)  # (b, C_in, H, W)
        if (h, w) != patch:
            x = F.interpolate(x, size=patch, mode="bilinear", align_corners=False)
        logits = _logits(predict_fn, x)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
        probs = torch.softmax(logits.float(), dim=1)
        labels.append(probs.argmax(dim=1).to("cpu", torch.int64))
        if keep_probs:
            chunks.append(probs)
    probs = torch.cat(chunks, dim=0).transpose(0, 1) if keep_probs else None
    return torch.cat(labels, dim=0), probs


def _predict_3d(
    predict_fn: PredictFn,
    image: Any,
    patch_size: Sequence[int],
    batch_size: int,
    overlap: float | Sequence[float],
    blend: str,
) -> Any:
    import torch
    from monai.inferers import sliding_window_inference

    probs = sliding_window_inference(
        image[None],  # (1, C_in, D, H, W)
        roi_size=tuple(int(s) for s in patch_size),
        sw_batch_size=batch_size,
        predictor=lambda x: _logits(predict_fn, x).float(),
        overlap=overlap,
        mode=blend,
        padding_mode="constant",
        cval=0.0,
    )
    return torch.softmax(torch.as_tensor(probs)[0], dim=0)  # (C, D, H, W)


def _checked_inputs(
    image: np.ndarray, spatial_dims: int, patch_size: Sequence[int], batch_size: int, blend: str
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """:func:`predict_volume`'s argument checks: ``(image as (C, D, H, W), spatial shape, patch size)``."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"predict_volume(): spatial_dims must be 2 or 3, got {spatial_dims!r}")
    choice("blend", blend, ("gaussian", "constant"), where="predict_volume()")
    image = np.asarray(image)  # a view for np.memmap (a lazily read case): nothing is read here
    if image.ndim not in (3, 4) or 0 in image.shape:
        raise ValueError(
            f"predict_volume(): image must be a non-empty (D, H, W) or (C, D, H, W) array, got shape {image.shape}"
        )
    spatial = tuple(image.shape[-3:])
    image = image[None] if image.ndim == 3 else image
    patch_size = tuple(int(s) for s in patch_size)
    if len(patch_size) != spatial_dims or min(patch_size) < 1:
        raise ValueError(
            f"predict_volume(): patch_size must hold {spatial_dims} positive integers in array order, got {patch_size}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"predict_volume(): batch_size must be >= 1, got {batch_size}")
    return image, spatial, patch_size


def predict_volume(
    predict_fn: PredictFn,
    image: np.ndarray,
    spatial_dims: int,
    patch_size: Sequence[int],
    batch_size: int = 16,
    device: str = "cpu",
    stride: Sequence[int] | None = None,
    overlap: float | Sequence[float] = 0.5,
    blend: str = "gaussian",
    return_probs: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment a whole volume with a patch-level predictor (under ``torch.inference_mode``).

    - ``spatial_dims=2``: slices ``image[k]`` along axis 0 are resized to ``patch_size`` (bilinear), predicted
      in batches of ``batch_size`` slices, and the logits resized back to the slice size (bilinear) before the
      softmax/argmax. SSL4MIS ``test_single_volume`` instead zooms the image with ``order=0`` and the argmax
      map back with ``order=0``; bilinear resizing of image and logits is smoother.
    - ``spatial_dims=3``: MONAI ``sliding_window_inference`` with ``roi_size=patch_size`` in array order
      ``(D, H, W)`` (the reference LA patch 112x112x80 in (x, y, z) is ``(80, 112, 112)``), ``batch_size``
      windows at a time, Gaussian or constant blending of overlapping windows, and zero padding when the
      volume is smaller than the patch (the output is cropped back). The overlap is ``overlap`` (one fraction
      or one per axis) or, when ``stride`` is given, the overlap giving exactly that stride
      (the reference protocol is :data:`REFERENCE_STRIDE_3D` with ``blend="constant"``).

    Args:
        predict_fn: ``(B, C_in, *patch) float32 tensor on device -> (B, C, *patch) logits`` (or an object
            with ``.logits``); it should already be on ``device`` and in eval mode.
        image: ``(D, H, W)`` float array (``C_in = 1``) or ``(C_in, D, H, W)``, normalised as for training.
        spatial_dims: 2 or 3.
        patch_size: network input size in array order: ``(H, W)`` for 2D, ``(D, H, W)`` for 3D.
        batch_size: slices (2D) or windows (3D) per forward pass.
        device: where the input and the blending live (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        stride: 3D window stride per axis (overrides ``overlap``).
        overlap: 3D window overlap fraction in ``[0, 1)``.
        blend: ``"gaussian"`` or ``"constant"`` (3D).
        return_probs: also return the softmax probabilities ``(C, D, H, W)`` float32.

    Returns:
        ``labels`` int64 ``(D, H, W)`` on the CPU, or ``(labels, probs)`` when ``return_probs``.

    Raises:
        ValueError: bad ``spatial_dims``, ``patch_size``, ``blend``, image shape, or predictor output shape.
    """
    import torch

    image, spatial, patch_size = _checked_inputs(image, spatial_dims, patch_size, batch_size, blend)
    if stride is not None:
        overlap = overlap_from_stride(patch_size, stride)
    with torch.inference_mode():
        labels = None
        if spatial_dims == 2:
            labels, probs = _predict_2d(predict_fn, image, patch_size, int(batch_size), device, return_probs)
        else:
            x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=device)
            probs = _predict_3d(predict_fn, x, patch_size, int(batch_size), overlap, blend)
        out_shape = tuple(labels.shape) if probs is None else tuple(probs.shape[1:])
        if out_shape != spatial:
            raise ValueError(
                f"predict_volume(): predictor output must keep the input size; got an output of spatial shape "
                f"{out_shape} for an image of spatial shape {spatial}"
            )
        if labels is None:
            labels = probs.argmax(dim=0).to("cpu", torch.int64)
        if return_probs:
            return labels.numpy(), probs.to("cpu", torch.float32).numpy()
    return labels.numpy()
