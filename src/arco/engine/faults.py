"""Fault injection for tests: what :func:`arco.engine.fit` can be told to break, never part of a run's config.

``fit(..., faults=Faults(nan_at=4))`` makes the loss NaN at iteration 4 (the non-finite-loss error and the kept
checkpoint); ``Faults(stop_at=3)`` ends the stage after iteration 3 as if the process had been killed there, with a
log row and ``last.pt`` written first (resume tests). Real kills: SIGKILL (``tests/test_kill_resume.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Faults"]


@dataclass(frozen=True)
class Faults:
    """Attributes:
    nan_at: iteration (0-based, the step's index) whose loss becomes NaN; None = never.
    stop_at: stop after this many iterations as if interrupted (``last.pt`` written); None = run to the end.
    """

    nan_at: int | None = None
    stop_at: int | None = None
