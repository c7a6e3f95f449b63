"""Error types and validation helpers shared by every layer (stdlib + torch only)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ArcoError", "DataError", "ConfigError", "CheckpointError", "did_you_mean", "choice"]


class ArcoError(Exception):
    """Base class for problems the user can fix (bad data, bad config, bad checkpoint).

    The CLI prints the message as one paragraph and exits non-zero; messages should say what was expected, what was
    found (naming the file or key) and how to fix it.
    """


class DataError(ArcoError):
    """A dataset on disk is missing, unreadable or inconsistent."""


class ConfigError(ArcoError, ValueError):
    """A configuration key or value is wrong."""


class CheckpointError(ArcoError):
    """A checkpoint is missing, corrupt or does not fit the model it is loaded into."""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest option, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def choice(argname: str, value: str, options: Iterable[str], where: str = "") -> str:
    """Check that ``value`` is one of ``options``; raise ``ValueError`` naming the argument otherwise."""
    options = list(options)
    if value not in options:
        prefix = f"{where}: " if where else ""
        known = ", ".join(repr(o) for o in options)
        raise ValueError(f"{prefix}{argname} must be one of {known}, got {value!r}{did_you_mean(value, options)}")
    return value
