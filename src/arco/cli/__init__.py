"""The ``arco`` command: argument parsing only; every verb calls into the library.

Each verb lives in its own module ``arco.cli.<verb>`` exposing ``add_parser(subparsers)``, which registers the verb and
sets ``func`` (a callable ``args -> int`` exit code). Heavy imports (torch) happen inside the verbs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
from collections.abc import Sequence

from arco import __version__

__all__ = ["main", "build_parser", "VERBS"]

# Order is the order shown in --help.
VERBS = ("demo", "train", "evaluate", "predict", "variance", "landscape", "study", "data", "curves")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arco",
        description="Semi-supervised medical image segmentation with ARCO (NeurIPS 2023).",
    )
    parser.add_argument("--version", action="version", version=f"arco {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more details")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"arco.cli.{verb}").add_parser(sub)
    return parser


def _fail(message: str, code: int = 2) -> int:
    """Print ``message`` as one paragraph on stderr and return ``code``; a rank of ``arco train --nproc`` hands it to
    the launching process instead (which prints one paragraph for all ranks)."""
    import traceback

    from arco.cli._launch import record_rank_error

    text = " ".join(str(message).split())
    if record_rank_error(text, code, traceback.format_exc()):
        return code
    print(
        textwrap.fill(f"arco: error: {text}", width=110, break_on_hyphens=False, break_long_words=False),
        file=sys.stderr,
    )
    return code


def _describe(exc: BaseException) -> str:
    """The message of ``exc``; an operating-system error also says which path and why in words (``[Errno 20] Not a
    directory: 'out/images'`` -> which part of the path is a file)."""
    if not isinstance(exc, OSError) or exc.errno is None or not exc.filename:
        return str(exc)
    import errno
    import os

    from arco._checks import path_problem

    name = os.fsdecode(exc.filename)
    if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
        return f"{name} {path_problem(name)} ({exc.strerror}); check the path"
    return f"{name}: {exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)}); check the path and its permissions"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``arco`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # verbs that re-launch themselves (arco train --nproc) pass the same arguments on
    if args.verb is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    from arco._checks import ArcoError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except UnicodeDecodeError as exc:  # a text file that is binary; the readers name the file, this is the net
        if args.debug:
            raise
        return _fail(f"a file is not UTF-8 text ({exc}); rerun with --debug to see which file was being read")
    except (ArcoError, ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, OSError) as exc:
        if args.debug:
            raise
        return _fail(_describe(exc), getattr(exc, "exit_code", 2))
    except Exception as exc:  # noqa: BLE001 - last resort: keep the one-paragraph contract, hint at --debug
        if args.debug:
            raise
        return _fail(f"{type(exc).__name__}: {exc} (this looks like a bug in arco; rerun with --debug for details)", 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
