"""arco.evaluation.inference: 2D slice-wise with resizing, 3D sliding window, known predictors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arco.evaluation.inference import REFERENCE_STRIDE_3D, overlap_from_stride, predict_volume


def sign_logits(x: torch.Tensor) -> torch.Tensor:
    """logits [-x, x]: the label is x > 0 wherever the predictor sees the voxel."""
    return torch.cat([-x, x], dim=1)


class CountingPredictor:
    """Records batch sizes and input sizes; returns [-x, x] (as an object with .logits, like arco.models)."""

    def __init__(self):
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, x):
        self.calls.append(tuple(x.shape))

        class Out:
            logits = sign_logits(x)

        return Out()


def _blocky(rng, depth, h, w, block):
    """±1 image of block x block squares: bilinear resizing by integer factors keeps every sign."""
    signs = np.sign(rng.standard_normal((depth, h // block, w // block)) + 1e-9)
    return np.kron(signs, np.ones((1, block, block))).astype(np.float32)


@pytest.mark.parametrize("patch", [(32, 48), (8, 12), (16, 24)])
def test_2d_resize_round_trip_gives_exact_labels(patch):
    # slices (16, 24) -> patch x2 up, x2 down, or the same size; 2x2 blocks of ±1 survive all three exactly.
    image = _blocky(np.random.default_rng(0), 5, 16, 24, block=2)
    fn = CountingPredictor()
    labels = predict_volume(fn, image, spatial_dims=2, patch_size=patch, batch_size=2)
    assert labels.dtype == np.int64 and labels.shape == image.shape
    np.testing.assert_array_equal(labels, (image > 0).astype(np.int64))
    assert [c[0] for c in fn.calls] == [2, 2, 1]  # slices are batched
    assert all(c[1:] == (1, *patch) for c in fn.calls)


def test_2d_non_integer_resize_keeps_shape_and_mostly_labels():
    image = _blocky(np.random.default_rng(1), 3, 20, 28, block=4)
    labels, probs = predict_volume(sign_logits, image, 2, (32, 32), return_probs=True)
    assert labels.shape == image.shape and probs.shape == (2, *image.shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert (labels == (image > 0)).mean() > 0.9


@pytest.mark.parametrize(
    "shape, patch, blend, stride",
    [
        ((20, 30, 26), (8, 12, 10), "gaussian", None),  # volume larger than the patch: many windows
        ((20, 30, 26), (8, 12, 10), "constant", (4, 6, 5)),
        ((6, 9, 7), (8, 12, 10), "gaussian", None),  # volume smaller than the patch: padded, cropped back
        ((10, 12, 10), (8, 12, 10), "constant", None),  # equal along some axes
    ],
)
def test_3d_sliding_window_exact_labels(shape, patch, blend, stride):
    image = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    fn = CountingPredictor()
    labels = predict_volume(fn, image, 3, patch, batch_size=4, blend=blend, stride=stride)
    assert labels.dtype == np.int64 and labels.shape == shape
    np.testing.assert_array_equal(labels, (image > 0).astype(np.int64))
    assert all(c[2:] == patch and c[0] <= 4 for c in fn.calls)


def test_stride_is_exact_in_monai():
    from monai.inferers.utils import _get_scan_interval

    patch = (80, 112, 112)
    overlap = overlap_from_stride(patch, REFERENCE_STRIDE_3D)
    assert _get_scan_interval((200, 300, 300), patch, 3, overlap) == REFERENCE_STRIDE_3D


def test_multiclass_argmax_and_image_untouched():
    image = np.linspace(-1, 1, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    before = image.copy()

    def three(x):
        return torch.cat([x, torch.zeros_like(x), -x], dim=1)

    labels = predict_volume(three, image, 2, (8, 8))
    np.testing.assert_array_equal(labels, np.where(image > 0, 0, 2))
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial_dims=4, patch_size=(8, 8)), "spatial_dims"),
        (dict(spatial_dims=2, patch_size=(8, 8, 8)), "patch_size"),
        (dict(spatial_dims=3, patch_size=(4, 4, 4), blend="gauss"), "did you mean 'gaussian'"),
        (dict(spatial_dims=3, patch_size=(4, 4, 4), stride=(5, 1, 1)), "stride"),
        (dict(spatial_dims=2, patch_size=(8, 8), batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_volume(sign_logits, np.zeros((4, 8, 8), np.float32), **kwargs)


def test_bad_image_shape():
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        predict_volume(sign_logits, np.zeros((8, 8), np.float32), 2, (8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    image = np.random.default_rng(3).standard_normal((10, 20, 16)).astype(np.float32)
    for dims, patch in ((2, (24, 24)), (3, (8, 12, 12))):
        cpu = predict_volume(sign_logits, image, dims, patch)
        gpu = predict_volume(sign_logits, image, dims, patch, device="cuda")
        np.testing.assert_array_equal(cpu, gpu)
