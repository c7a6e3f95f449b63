"""`arco train` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="(not implemented yet)")
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("arco train is not implemented yet")))
