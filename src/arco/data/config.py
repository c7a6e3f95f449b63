"""`DataConfig`: what dataset to load and how (set from YAML by the config system)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """Dataset selection, label split and per-sample augmentation.

    Args:
        dataset: registry name: ``phantom2d``, ``phantom3d``, ``acdc``, ``la``, ``nnunet``, ``lits``,
            ``mmwhs``,
            ``mni152``, ``preprocessed`` (a folder written by ``arco data preprocess``)
            (``arco.data.DATASETS.names()``).
        root: dataset folder (not needed for ``mni152``). Phantoms are generated there when absent and
            ``generate``.
        labeled: labeled part of the training cases: a count (``"3"``), a fraction (``"0.1"``), ``"all"``, or
            a
            comma-separated list of case/patient ids. Always by patient, never by slice.
        split_rule: ``"patients"`` (all slices of the first N training patients) or ``"ssl4mis"`` (ACDC
            convention:
            the first rows of ``train_slices.list``; 1 -> 23, 3 -> 68, 7 -> 136 slices on ACDC).
        patch_size: network input size; 2D ``(H, W)``, 3D ``(D, H, W)`` (same axis order as `Volume`: D =
            slices).
            Empty = the dataset default (phantom2d 128x128, acdc/lits/mmwhs 256x256, la 80x112x112 (the
            reference
            112x112x80 in (D, H, W) order), phantom3d 32x48x48, mni152 128x128).
        normalization: ``minmax``, ``zscore``, ``ct`` (window ``ct_window`` HU to [0, 1]), ``none``; ``""`` =
            the
            dataset default (``none`` for the h5 layouts, already normalised on disk).
        augment: weak augmentation of training samples (2D: rotation, zoom-crop, horizontal flip; 3D: random
            crop,
            rot90, flip). 3D patches are randomly cropped even when False.
        seed: seed for data generation (phantoms).
        split_seed: seed of the case shuffle for layouts without list files (nnU-Net); kept apart from
            ``seed`` so
            the test split does not change between training seeds.
        generate: phantoms: generate the dataset under ``root`` when it is absent.
        subjects: phantoms: number of subjects generated.
        image_size: phantoms: in-plane size (0 = default: 128 for phantom2d, 64 for phantom3d).
        num_classes: expected number of classes including background (0 = take it from the dataset).
        spatial_dims: 2 or 3 (0 = the dataset's own); nnU-Net folders can be read either way.
        val_fraction: fraction of training cases held out as validation when the layout has no val list.
        test_fraction: nnU-Net folders without ``labelsTs``: fraction of cases held out for testing.
        rotation: maximal rotation in degrees for 2D weak augmentation.
        max_zoom: maximal zoom factor of the 2D random crop (1.0 = no zoom).
        ct_window: HU window for ``normalization="ct"``.
        oversample_foreground: ``preprocessed`` dataset: fraction of labeled training items centred on a stored
            foreground voxel (nnU-Net's 0.33); the other items are uniform random patches / slices.
    """

    dataset: str = "phantom2d"
    root: str = ""
    labeled: str = "3"
    split_rule: str = "patients"
    patch_size: tuple[int, ...] = ()
    normalization: str = ""
    augment: bool = True
    seed: int = 0
    split_seed: int = 0
    generate: bool = True
    subjects: int = 40
    image_size: int = 0
    num_classes: int = 0
    spatial_dims: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    rotation: float = 20.0
    max_zoom: float = 1.2
    ct_window: tuple[float, float] = (-200.0, 250.0)
    oversample_foreground: float = 0.33
