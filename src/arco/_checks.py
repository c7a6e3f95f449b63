"""Error types and validation helpers shared by every layer (stdlib + torch only)."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ArcoError", "DataError", "ConfigError", "CheckpointError", "did_you_mean", "choice", "path_problem"]


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


def path_problem(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be opened, as the end of a sentence that starts with the path: ``"does not exist"``,
    ``"is a symlink loop ..."``, ``"is a broken symlink to X ..."``, ``"lies under F, which is a file ..."``.

    For error messages about inputs that look missing: a link pointing back to itself is not "missing".
    """
    p = Path(path)
    try:
        os.stat(p)
    except OSError as exc:
        code = exc.errno
    else:
        return "exists but is not what was expected here"
    if code == errno.ELOOP:
        return (
            "is a symlink loop (a link that points back to itself, directly or through other links); replace it "
            "with the real file or folder"
        )
    if code == errno.ENOTDIR:
        parent = next((a for a in p.parents if os.path.lexists(a) and not a.is_dir()), None)
        if parent is not None:
            return f"lies under {parent}, which is a file, not a folder"
    if code == errno.EACCES:
        return "cannot be reached: permission denied on one of its folders"
    if os.path.islink(p):
        return f"is a broken symlink to {os.readlink(p)}, which does not exist"
    return "does not exist"
