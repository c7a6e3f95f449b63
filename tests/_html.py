"""Reading an arco HTML report back with the standard library's parser (what a browser would show)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class ParsedPage:
    """What the tests look at: table headers and cells, embedded images (alt text, sources), headings, scripts."""

    headers: set[str] = field(default_factory=set)
    cells: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)
    image_sources: list[str] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    text: str = ""
    scripts: int = 0
    sortable: int = 0


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = ParsedPage()
        self.stack: list[str] = []
        self.buf: list[str] = []
        self.chunks: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("th", "td", "h1", "h2", "h3"):
            self.stack.append(tag)
            self.buf = []
        if tag == "img":
            self.page.images.add(a.get("alt", ""))
            self.page.image_sources.append(a.get("src", ""))
        if tag == "script":
            self.page.scripts += 1
            if a.get("src"):
                self.page.external.append(a["src"])
        if tag == "link" and a.get("href"):
            self.page.external.append(a["href"])
        if tag == "a" and a.get("href"):
            self.page.links.append(a["href"])
        if tag == "table" and "sortable" in (a.get("class") or ""):
            self.page.sortable += 1

    def handle_endtag(self, tag):
        if self.stack and tag == self.stack[-1]:
            self.stack.pop()
            text = "".join(self.buf).strip()
            {"th": self.page.headers, "td": self.page.cells}.get(tag, set()).add(text)
            if tag.startswith("h"):
                self.page.headings.append(text)

    def handle_data(self, data):
        self.buf.append(data)
        self.chunks.append(data)


def parse_page(text: str) -> ParsedPage:
    """Parse a report; checks that every embedded image decodes as a PNG."""
    p = _Parser()
    p.feed(text)
    p.page.text = " ".join(p.chunks)
    for src in p.page.image_sources:
        if src.startswith("data:image/png;base64,"):
            assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return p.page
