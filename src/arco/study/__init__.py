"""Studies: grids of runs over seeds (the paper's tables and Fig. 5), with shared stages, parallel or Slurm
execution, statistics and figures. ``arco study`` is the command; :func:`run_study` the library entry point.

Layout (imports point down): :mod:`~arco.study.budget` (the ``tune:`` section) <- :mod:`~arco.study.spec` (study
files -> runs) <- :mod:`~arco.study.plan` (stage fingerprints, shared and reused stages, jobs) <-
:mod:`~arco.study.tune` (tuning runs, the choice by validation), :mod:`~arco.study.worker` (one job) <-
:mod:`~arco.study.launch` (local processes, inline, Slurm) ; :mod:`~arco.study.stats`, :mod:`~arco.study.collect`,
:mod:`~arco.study.report`, :mod:`~arco.study.figures`, :mod:`~arco.study.provenance` (results, machine, history),
:mod:`~arco.study.cost` (time estimates) <- :mod:`~arco.study.run` (the whole study) ; :mod:`~arco.study.results`
(the results page and the README block from finished study folders).
"""

from __future__ import annotations

from arco.study.launch import SlurmOptions
from arco.study.run import LAUNCHERS, plan_study, run_study
from arco.study.spec import StudySpec, builtin_studies, expand, load_study
from arco.study.stats import mean_std, paired_difference

__all__ = [
    "LAUNCHERS",
    "SlurmOptions",
    "StudySpec",
    "builtin_studies",
    "expand",
    "load_study",
    "mean_std",
    "paired_difference",
    "plan_study",
    "run_study",
]
