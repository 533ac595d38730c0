"""Sanitise an HTML fragment of generated text (``spelling/<name>.text.html``) for the run report.

The fragment is rebuilt from a whitelist: the tags and classes a spelling text page uses, and the
``data-iteration`` attribute; every other tag is shown as text (so tampering is visible and
inert), every piece of text is escaped. The result is the only markup the report template
inserts unescaped besides its own assets.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

__all__ = ["sanitize_fragment"]


def esc(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


_ALLOWED_TAGS = {"section", "div", "h3", "h4", "p", "pre", "span", "mark", "b", "i", "em", "strong", "br"}
_VOID = {"br"}
_ALLOWED_CLASSES = {"miss", "prompt", "unscored", "sample", "sample-wrap", "sample-head",
                    "spelling-samples"}


class _Sanitiser(HTMLParser):
    """Rebuild an HTML fragment from a whitelist: allowed tags and classes, all text escaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        tag = tag.lower()
        if tag not in _ALLOWED_TAGS:  # shown as text, so tampering is visible and inert
            self.out.append(html.escape(self.get_starttag_text() or f"<{tag}>", quote=True))
            return
        parts = [tag]
        for k, v in attrs:
            k = (k or "").lower()
            if k == "class" and v:
                cls = [c for c in v.split() if c in _ALLOWED_CLASSES]
                if cls:
                    parts.append(f'class="{" ".join(cls)}"')
            elif k == "data-iteration" and v is not None and re.fullmatch(r"[\w.\-]{0,40}", v):
                parts.append(f'data-iteration="{esc(v)}"')
        self.out.append("<" + " ".join(parts) + ">")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag.lower() in _VOID:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        tag = tag.lower()
        if tag not in _ALLOWED_TAGS:
            self.out.append(html.escape(f"</{tag}>", quote=False))
            return
        if tag in _VOID or tag not in self.stack:
            return
        while self.stack:  # close anything left open inside it, keeping the tree balanced
            t = self.stack.pop()
            self.out.append(f"</{t}>")
            if t == tag:
                break

    def handle_data(self, data):
        self.out.append(html.escape(data, quote=True))

    def result(self) -> str:
        self.close()
        while self.stack:
            self.out.append(f"</{self.stack.pop()}>")
        return "".join(self.out)


def sanitize_fragment(fragment: str) -> str:
    """Keep only the tags/classes of a spelling text page; escape everything else as text."""
    p = _Sanitiser()
    p.feed(fragment)
    return p.result()
