"""The harness of the bad-input suites (test_bad_input*.py): run ``arco.cli.main`` on a bad input and check the
promise of the README: a non-zero exit, one paragraph on stderr without a traceback that names the file or key,
inputs untouched (hashed before and after) and ``--out`` exactly as it was (all or nothing)."""

from __future__ import annotations

import hashlib
import locale
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arco.cli import main


@dataclass
class Bad:
    """One bad input: the arguments, a regex the message must match (the file or key it names), the inputs that
    must stay byte-identical, and the output folder that must stay as it was."""

    argv: list[str]
    expect: str
    inputs: list[Path] = field(default_factory=list)
    out: Path | None = None


def digest(path: Path) -> dict[str, str]:
    """Name -> sha256 of every file under ``path`` (links are hashed by their target text, never followed)."""
    path = Path(path)
    if os.path.islink(path):
        return {str(path): "link:" + os.readlink(path)}
    if not os.path.lexists(path):
        return {str(path): "absent"}
    if path.is_file():
        return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {str(path): "dir"}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        out.update(digest(Path(entry.path)))
    return out


def check_bad(bad: Bad, capsys) -> str:
    """Run ``bad`` and assert the contract; return the message (whitespace squashed)."""
    before = [digest(p) for p in bad.inputs]
    out_before = digest(bad.out) if bad.out is not None else None
    capsys.readouterr()
    try:
        code = main(bad.argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert code not in (0, None), f"exit 0 on bad input: {bad.argv}\nstdout: {captured.out}"
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err
    assert re.search(bad.expect, err), f"message does not name {bad.expect!r}: {err}"
    assert [digest(p) for p in bad.inputs] == before, "an input was changed"
    if bad.out is not None:
        assert digest(bad.out) == out_before, f"--out {bad.out} changed: {digest(bad.out)}"
    return err


def cut(path: Path, keep: float = 0.5) -> Path:
    """Truncate ``path`` to ``keep`` of its size (a transfer that stopped half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def dicom_series(folder: Path, zs=(0.0, 2.5, 5.0, 7.5), uid="1.2.826.0.1.3680043.2.1125.9.7", orient=None) -> Path:
    """One int16 20x24 DICOM slice per position ``zs`` (mm along z), with the tags GDCM orders a series by.
    ``orient`` maps a slice index to another Image Orientation (Patient) (a mixed series)."""
    import SimpleITK as sitk

    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer switches the process locale to "C"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        rng = np.random.default_rng(len(zs))
        for i, z in enumerate(zs):
            sl = sitk.GetImageFromArray(rng.integers(0, 400, (20, 24)).astype(np.int16))
            tags = {
                "0008|0060": "MR",
                "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
                "0008|0018": f"{uid}.{i + 1}",
                "0020|000d": f"{uid}.100",
                "0020|000e": f"{uid}.200",
                "0020|0037": (orient or {}).get(i, "1\\0\\0\\0\\1\\0"),
                "0020|0032": f"0\\0\\{z}",
                "0020|0013": str(i + 1),
                "0018|0050": "2.5",
            }
            for k, v in tags.items():
                sl.SetMetaData(k, v)
            writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
            writer.Execute(sl)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return folder
