"""Fingerprints of source files, so a preprocessed copy notices when its source changed.

A fingerprint is ``{"size", "mtime_ns", "hash", "mode"}``. ``mode="fast"`` hashes (BLAKE2b) the size and the first
and last MiB of the file, which catches re-exported scans in milliseconds; ``mode="full"`` hashes every byte. A file
matches its fingerprint when size and mtime are unchanged, or, when they differ (a copy, a ``touch``), when the
hash is unchanged: so copying a dataset to another disk does not invalidate its preprocessed copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["HASH_MODES", "file_fingerprint", "file_hash", "matches"]

HASH_MODES = ("fast", "full")
_EDGE = 1 << 20  # bytes hashed at each end of the file in fast mode
_CHUNK = 8 << 20


def file_hash(path: str | os.PathLike, mode: str = "fast") -> str:
    """BLAKE2b hex digest of ``path``: its size and first/last MiB (``fast``) or all bytes (``full``)."""
    if mode not in HASH_MODES:
        raise ValueError(f"file_hash(): mode must be one of {HASH_MODES}, got {mode!r}")
    h = hashlib.blake2b(digest_size=16)
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if mode == "full" or size <= 2 * _EDGE:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        else:
            h.update(fh.read(_EDGE))
            fh.seek(size - _EDGE)
            h.update(fh.read(_EDGE))
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike, mode: str = "fast") -> dict[str, Any]:
    """``{"size", "mtime_ns", "hash", "mode"}`` of ``path`` (see the module docstring)."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": file_hash(path, mode), "mode": mode}


def matches(path: str | os.PathLike, fingerprint: dict[str, Any]) -> bool:
    """Whether ``path`` still has ``fingerprint``: same size and mtime, or else the same content hash. A missing
    file does not match."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return False
    if st.st_size != fingerprint.get("size"):
        return False
    if st.st_mtime_ns == fingerprint.get("mtime_ns"):
        return True
    return file_hash(path, fingerprint.get("mode", "fast")) == fingerprint.get("hash")
