"""`DataConfig`: what dataset to load and how (set from YAML by the config system)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """Dataset selection, label split and per-sample augmentation.

    Args:
        dataset: registry name: ``phantom2d``, ``phantom3d``, ``phantom_mp``, ``acdc``, ``la``, ``nnunet``,
            ``lits``, ``mmwhs``, ``mni152``, ``preprocessed`` (a folder written by ``arco data preprocess``)
            (``arco.data.DATASETS.names()``).
        root: dataset folder (not needed for ``mni152``). A folder that does not exist is an error: loaders never
            generate data in its place (see ``generate``).
        labeled: labeled part of the training cases: a count (``"3"``), a fraction (``"0.1"``), ``"all"``, or a
            comma-separated list of case/patient ids. Always by patient, never by slice.
        split_rule: ``"patients"`` (all slices of the first N training patients) or ``"ssl4mis"`` (ACDC
            convention: the first rows of ``train_slices.list``; 1 -> 23, 3 -> 68, 7 -> 136 slices on ACDC).
        patch_size: network input size; 2D ``(H, W)``, 3D ``(D, H, W)`` (same axis order as `Volume`: D =
            slices). Empty = the dataset default (phantom2d 128x128, acdc/lits/mmwhs 256x256, la 80x112x112 (the
            reference 112x112x80 in (D, H, W) order), phantom3d 32x48x48, phantom_mp 64x64, mni152 128x128).
        normalization: ``minmax``, ``zscore``, ``ct`` (window ``ct_window`` HU to [0, 1]), ``none`` for every
            channel, or a comma list with one per channel (``"ct,zscore"``); ``""`` = the dataset default
            (``none`` for the h5 layouts, already normalised on disk; for nnU-Net folders each channel's scheme
            from its ``channel_names`` entry as nnU-Net picks it: ``CT`` -> ``ct``, other names -> ``zscore``).
        augment: weak augmentation of training samples (2D: rotation, zoom-crop, horizontal flip; 3D: random
            crop,
            rot90, flip). 3D patches are randomly cropped even when False.
        seed: seed for data generation (phantoms).
        split_seed: seed of the case shuffle for layouts without list files (nnU-Net); kept apart from
            ``seed`` so
            the test split does not change between training seeds.
        generate: phantoms: ``arco study`` (and ``arco demo``, always) generate the dataset under ``root`` before
            the runs when it is absent. Nothing else generates: ``arco train``, ``arco evaluate`` and
            `build_data` raise on a missing ``root``, naming the ``arco data phantom`` command that makes it.
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

    def __post_init__(self) -> None:
        """Reject bad values when the config is read, not at the first use (names the key and the fix)."""
        from arco._checks import ConfigError, DataError, choice
        from arco.data.splits import check_rule, parse_labeled
        from arco.data.volume import NORMALIZATIONS

        try:
            parse_labeled(self.labeled)
        except DataError as exc:
            raise ConfigError(str(exc)) from exc
        check_rule(self.split_rule)
        for scheme in filter(None, (x.strip() for x in self.normalization.split(","))):
            choice("data.normalization", scheme, NORMALIZATIONS)
        if not 0 <= self.oversample_foreground <= 1:
            raise ConfigError(f"data.oversample_foreground must be in [0, 1], got {self.oversample_foreground}")
        if self.spatial_dims not in (0, 2, 3):
            raise ConfigError(f"data.spatial_dims must be 0 (the dataset's own), 2 or 3, got {self.spatial_dims}")
        if self.patch_size and (len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1):
            raise ConfigError(f"data.patch_size must be 2 or 3 positive sizes, got {list(self.patch_size)}")
        if self.num_classes not in (0,) and self.num_classes < 2:
            raise ConfigError(f"data.num_classes must be 0 (from the dataset) or >= 2, got {self.num_classes}")
        for key in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.subjects < 1 or self.image_size < 0 or self.max_zoom < 1 or self.rotation < 0:
            raise ConfigError(
                "data: subjects must be >= 1, image_size >= 0, max_zoom >= 1 and rotation >= 0; got "
                f"{self.subjects}, {self.image_size}, {self.max_zoom}, {self.rotation}"
            )
        if self.ct_window[0] >= self.ct_window[1]:
            raise ConfigError(f"data.ct_window must be (low, high) with low < high, got {list(self.ct_window)}")
