"""Converters from the official downloads to the layouts the field trains on (``arco data convert``).

- `convert_acdc`: ACDC challenge folders -> SSL4MIS h5 layout + the standard lists (loader ``acdc``).
- `convert_la`: 2018 LA challenge NRRD -> UA-MT ``mri_norm2.h5`` + the UA-MT lists (loader ``la``).
- `convert_msd`: Medical Segmentation Decathlon task -> nnU-Net v2 raw folder (loader ``nnunet``).

Every converter refuses a non-empty output folder unless asked to overwrite, never writes into its input,
and writes into a temporary folder renamed into place at the end.
"""

from __future__ import annotations

from arco.data.convert.acdc import convert_acdc
from arco.data.convert.la import convert_la
from arco.data.convert.msd import convert_msd

__all__ = ["convert_acdc", "convert_la", "convert_msd"]
