"""`arco curves` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="(not implemented yet)")
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("arco curves is not implemented yet")))
