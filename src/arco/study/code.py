"""The version of the code that shapes a stage's weights, for the study's stage fingerprints.

Two parts, both hashes of source files as they are on disk when the study is planned:

- ``shared``: what every method trains with: the engine, the losses, the models, the samplers, the data (loaders,
  augmentation, phantoms), the method base, the validation metrics and inference (they choose ``best.pt``), the
  pipeline and the augmentations (:data:`SHARED_SOURCES`);
- ``method``: the file of the stage's method class and, followed through its imports, the files of the
  ``arco.methods`` modules it uses (``arco.py`` -> ``_arco_common.py``, ``arco_pretrain.py``, ``_common.py``). A
  plug-in method's own file counts the same way.

With the package version beside them, a change to any of these files changes the fingerprint of the stages it can
affect (and, through their ``init``, of the stages after them), and nothing else does: editing BCP's file retrains
BCP's stages, not ARCO's. The git commit, when the package is a git checkout, is recorded for the reader but not
hashed (a commit that changes only documentation retrains nothing).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["SHARED_SOURCES", "code_version", "git_commit", "method_files"]

_PACKAGE = Path(__file__).resolve().parent.parent
#: Files and folders under ``src/arco`` whose code shapes the weights of every method's stages.
SHARED_SOURCES = (
    "engine",
    "losses",
    "models",
    "sampling",
    "data",
    "methods/base.py",
    "evaluation/metrics.py",
    "evaluation/inference.py",
    "augment.py",
    "pipeline.py",
    "_dist.py",
)
#: ``arco.methods`` modules the shared part covers already.
_NOT_METHOD_CODE = ("arco.methods", "arco.methods.base", "arco.methods.registry")


def _digest(files: list[Path], root: Path | None) -> str:
    h = hashlib.sha256()
    for f in files:
        name = str(f.relative_to(root)) if root is not None and f.is_relative_to(root) else f.name
        h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _shared_digest() -> str:
    files: list[Path] = []
    for item in SHARED_SOURCES:
        path = _PACKAGE / item
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return _digest(files, _PACKAGE)


def _imported(path: Path, module: str) -> set[str]:
    """Modules under ``arco.methods`` that the source file of ``module`` imports (absolute or relative)."""
    package = module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("arco.methods.") and m not in _NOT_METHOD_CODE and m in sys.modules}


def method_files(cls: type) -> list[Path]:
    """The source files of method class ``cls``: its module's and those of the ``arco.methods`` modules it imports,
    transitively."""
    seen: dict[str, Path] = {}
    todo = [cls.__module__]
    while todo:
        name = todo.pop()
        file = getattr(sys.modules.get(name), "__file__", None)
        if name in seen or not file:
            continue
        seen[name] = Path(file).resolve()
        todo += sorted(_imported(seen[name], name) - set(seen))
    return sorted(seen.values())


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout arco runs from (``None`` for an installed package or without git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(_PACKAGE), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def code_version(method: str) -> dict[str, Any]:
    """``{"arco", "shared", "method"}``: the package version and the hashes of the shared and the method's sources
    (see the module docstring) for registered method ``method``."""
    import arco
    from arco.methods import get_method

    return {
        "arco": arco.__version__,
        "shared": _shared_digest(),
        "method": _digest(method_files(get_method(method)), _PACKAGE),
    }
