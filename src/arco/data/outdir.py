"""Output folders of generators and converters: never replace inputs, never half-written.

A dataset is written into a hidden temporary folder next to ``out`` and renamed into place at the end, so
``out`` either holds the complete dataset or is left as it was (an interrupted conversion leaves only the
temporary folder, which the next run removes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["fresh_dir", "publish_dir", "staged_dir"]


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def fresh_dir(out: str | os.PathLike, overwrite: bool = False, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check ``out`` and return an empty temporary folder beside it to write into (then `publish_dir`).

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder and ``overwrite`` is False.
        ValueError: ``out`` is, contains or lies inside one of ``inputs`` (replacing it would delete them).
    """
    from arco._io import check_out_dir, writing

    out = Path(out)
    for src in inputs:
        if _overlaps(out, Path(src)):
            raise ValueError(f"--out {out} overlaps the input {src}; write the output to a separate folder")
    check_out_dir(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    with writing(out):
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: Path, out: str | os.PathLike) -> None:
    """Move the finished ``tmp`` folder to ``out`` (a previous ``out`` is moved aside first, then removed)."""
    out = Path(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def staged_dir(
    out: str | os.PathLike, overwrite: bool = False, inputs: Sequence[str | os.PathLike] = ()
) -> Iterator[Path]:
    """`fresh_dir` + `publish_dir` around a block: yields the temporary folder, publishes it when the block
    succeeds and removes it when the block raises (``out`` is then left as it was)."""
    out = Path(out)
    new = [p for p in Path(os.path.abspath(out)).parents if not os.path.lexists(p)]  # created for the output
    tmp = fresh_dir(out, overwrite, inputs)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in new:  # innermost first; only the empty folders this made
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    publish_dir(tmp, out)
