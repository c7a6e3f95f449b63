"""Self-contained HTML pages (one file, no network): tables, sortable tables, figures embedded as base64 PNG,
configuration blocks. Standard library only, so every layer may use it.

A page opens from a cluster's file share or an e-mail attachment as it is: styles and the table-sorting script are
inline, images are ``data:`` URIs, nothing is fetched.

Example:
    >>> page = Page("Evaluation")
    >>> page.table(["case", "Dice"], [["a", 0.5], ["b", 0.75]], sortable=True)
    >>> "<table" in page.render()
    True
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text

__all__ = ["Page", "source_commit", "fmt"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1300px;
padding:0 24px 48px;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #d0d7de;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#f3f5f7}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#8c959f;font-size:.8em}
table.sortable th.asc:after{content:" \\2191";color:#1d1d1f}
table.sortable th.desc:after{content:" \\2193";color:#1d1d1f}
tr:nth-child(even) td{background:#fafbfc}
.meta td{text-align:left;white-space:normal}
.meta td:first-child{font-weight:600;white-space:nowrap}
figure{margin:1em 1em 1em 0;display:inline-block;vertical-align:top}
figure img{max-width:100%;border:1px solid #e5e7eb}
figcaption{font-size:.85em;color:#57606a}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:.8em;max-height:480px}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;font-size:.9em}
nav a{margin-right:1em}
.tbl{max-width:100%;overflow-x:auto}
.tbl.scroll{max-height:560px;overflow:auto;display:inline-block}
"""

# Click a header to sort by that column (numbers numerically, text alphabetically; a second click reverses).
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.from(body.rows),asc=!th.classList.contains('asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      function key(r){var s=r.cells[i].getAttribute('data-v')||r.cells[i].textContent.trim();
        var n=parseFloat(s);return isNaN(n)?s.toLowerCase():n;}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(typeof x!==typeof y){x=String(x);y=String(y);}
        return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def fmt(x: Any, digits: int = 4) -> str:
    """A cell's text: floats with ``digits`` decimals, NaN/None as ``n/a``, anything else as ``str``."""
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def source_commit(path: str | os.PathLike | None = None) -> str:
    """The git commit of the arco source tree (``abc1234``, ``+dirty`` with uncommitted changes), or
    ``unknown`` when arco is not installed from a git checkout."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class Page:
    """An HTML page built section by section; :meth:`write` saves it atomically as one file.

    Args:
        title: the page's ``<title>`` and top heading.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.sections: list[tuple[str, str]] = []

    def heading(self, text: str, level: int = 2) -> None:
        """A heading; level-2 headings get an anchor and an entry in the page's navigation bar."""
        if level == 2:
            anchor = f"s{len(self.sections) + 1}"
            self.sections.append((anchor, text))
            self.parts.append(f'<h2 id="{anchor}">{html.escape(text)}</h2>')
        else:
            self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, note: bool = False) -> None:
        """A paragraph of plain text (escaped); ``note`` draws it as a highlighted box."""
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def raw(self, fragment: str) -> None:
        """Trusted HTML (built by the caller from escaped parts)."""
        self.parts.append(fragment)

    def meta(self, items: Iterable[tuple[str, Any]]) -> None:
        """A two-column key/value table."""
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(fmt(v))}</td></tr>" for k, v in items)
        self.parts.append(f'<table class="meta"><tbody>{rows}</tbody></table>')

    def table(
        self,
        header: Sequence[str],
        rows: Iterable[Sequence[Any]],
        sortable: bool = False,
        digits: int = 4,
        caption: str | None = None,
        scroll: bool = False,
    ) -> None:
        """A table; ``sortable`` adds click-to-sort headers (numbers sort by value, ``n/a`` last as text)."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = []
        for r in rows:
            cells = []
            for v in r:
                text = fmt(v, digits)
                num = f' data-v="{v!r}"' if isinstance(v, float) and math.isfinite(v) else ""
                cells.append(f"<td{num}>{html.escape(text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cls = ' class="sortable"' if sortable else ""
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        out = f"<table{cls}>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        self.parts.append(f'<div class="tbl{" scroll" if scroll else ""}">{out}</div>')

    def figure(self, png: str | os.PathLike | bytes, caption: str = "", alt: str | None = None) -> None:
        """A PNG embedded as a base64 ``data:`` URI (a path is read now), with a caption."""
        data = png if isinstance(png, bytes) else Path(png).read_bytes()
        name = alt if alt is not None else (Path(png).name if not isinstance(png, bytes) else caption)
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">{cap}</figure>')

    def code(self, text: str, summary: str | None = None) -> None:
        """Preformatted text (a config file, a command), folded under ``summary`` when given."""
        block = f"<pre>{html.escape(text)}</pre>"
        if summary:
            block = f"<details><summary>{html.escape(summary)}</summary>{block}</details>"
        self.parts.append(block)

    def render(self) -> str:
        """The whole page as a string."""
        nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.sections)
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><nav>{nav}</nav>"
            + "\n".join(self.parts)
            + f'<p style="color:#8c959f;font-size:.8em">written by arco on {stamp}</p>'
            f"<script>{_SORT_JS}</script></body></html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page atomically; returns the path."""
        out = Path(path)
        atomic_write_text(out, self.render())
        return out
