"""MONA: Mine yOur owN Anatomy (You et al., arXiv 2022 / TPAMI 2024; the ARCO paper's reference [17]) as a preset
of the ARCO stages.

The ARCO paper builds ARCO "as a simplification of the MONA pipeline" and compares with MONA as ARCO with naive
sampling; the authors' MONA repository (charlesyou999648/MONA) is the ARCO code with ``--func rand`` (the naive
sampler) as the stage-2 default, everything else equal. So ``mona`` = ``arco-pretrain`` -> ``arco-finetune`` with
``sampler: ns`` fixed (the same stages as ``arco-ns``, registered under MONA's name and paper). What the ARCO
stages leave out of the authors' code applies to MONA too (docs/methods.md): the TPS/affine equivariance KL term,
the entropy-percentile masks of the contrastive loss and the authors' own batch augmentations.
"""

from __future__ import annotations

from arco.methods import arco  # noqa: F401 - registers the stages below (arco-pretrain, arco-finetune)
from arco.methods.registry import RecipeStage, register_recipe

__all__: list[str] = []

_PAPER = (
    "You et al., Mine yOur owN Anatomy: Revisiting Medical Image Segmentation with Extremely Limited Labels, "
    "arXiv 2209.13476 (2022), TPAMI 2024"
)

register_recipe(
    "mona",
    (
        RecipeStage("pretrain", "arco-pretrain", 0.5),
        RecipeStage("finetune", "arco-finetune", 0.5, params={"sampler": "ns"}),
    ),
    "MONA: ARCO's two stages with naive (NS) pixel sampling in the contrastive fine-tuning",
    _PAPER,
)
