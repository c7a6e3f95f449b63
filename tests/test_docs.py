"""The README and the guide: length, the two commands first, links and anchors that resolve, the generated-results
markers, and every `arco ...` command shown parses with the current CLI (and its config overrides load).

`mkdocs build --strict` (scripts/test.sh) checks the guide's own links, anchors and API reference; these tests
cover the README, which lives outside the guide, and the commands in both."""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest

from arco.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs and GitHub use for these headings)."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    out, fence = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            out.add(_slug(line.lstrip("#").strip()))
    return out


def _blocks(path: Path) -> list[str]:
    """The shell lines of a file's ```bash blocks, continuation lines joined."""
    lines, fence, buf = [], None, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            continue
        if fence != "bash":
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        lines.append(buf)
        buf = ""
    return lines


def test_readme_is_a_product_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first = _blocks(README)[:2]
    expected = [["bash", "scripts/demo.sh"], ["bash", "scripts/test.sh"]]
    assert [shlex.split(line, comments=True) for line in first] == expected
    for script in ("scripts/demo.sh", "scripts/test.sh", "scripts/setup.sh", ".ci/run"):
        assert (ROOT / script).is_file()
    assert not re.search(r"\b(I|I'm|I've|my|we|our)\b", text), "no first-person narrative in the README"
    # the own-data quick start is one section, reachable from the top
    assert "## Quick start on your own data" in text and "arco predict" in text.split("## Headline result")[0]


def test_headline_markers_wrap_one_table():
    text = README.read_text()
    assert text.count("<!-- results:headline:start -->") == text.count("<!-- results:headline:end -->") == 1
    inside = text.split("<!-- results:headline:start -->")[1].split("<!-- results:headline:end -->")[0]
    assert "| phantom2d |" in inside and "| mni152 |" in inside and "arco-vs-supervised-dice.png" in inside


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    text = path.read_text()
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{path.name}: no heading #{anchor} in {dest.name}"


def _arco_commands() -> list[tuple[str, str]]:
    out = []
    for path in [README, *DOCS]:
        for line in _blocks(path):
            words = shlex.split(line, comments=True)
            if words and words[0] == "arco" and not any("..." in w for w in words):
                out.append((path.name, line))
    return out


COMMANDS = _arco_commands()


def test_the_docs_show_every_verb():
    verbs = {shlex.split(line, comments=True)[1] for _, line in COMMANDS}
    assert verbs >= {"demo", "train", "evaluate", "predict", "variance", "study", "data", "curves"}


@pytest.mark.parametrize("where, line", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_documented_command_parses(where, line):
    words = shlex.split(line, comments=True)
    try:
        args = build_parser().parse_args(words[1:])
    except SystemExit as exc:  # argparse's way of rejecting a command line
        pytest.fail(f"{where}: `{line}` is not a valid command line ({exc})")
    if args.verb == "train" and not args.list_presets and not args.list_methods:
        from arco.config import load_config, presets

        if args.config in presets():  # the documented overrides name real keys of that preset
            load_config(args.config, tuple(args.overrides), method=args.method)
