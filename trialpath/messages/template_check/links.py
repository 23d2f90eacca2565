"""The links of a rendered email: its `href`s, why one is broken, and the template line that
wrote it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urlsplit

from trialpath.messages.template_check.files import File


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key == "href":
                self.hrefs.append(value or "")


def hrefs(html: str) -> list[str]:
    parser = _Hrefs()
    parser.feed(html)
    parser.close()
    return parser.hrefs


def href_problem(href: str) -> str | None:
    """Why a link target is broken, or None."""
    if not href.strip():
        return "the link address is empty"
    for marker in ("{{", "}}"):
        if marker in href:
            return f"the link address contains `{marker}`: a variable was not filled in"
    for marker in ("None", "undefined"):
        if marker in href:
            return f"the link address contains `{marker}`: the variable it uses is empty"
    if " " in href.strip() or href != href.strip():
        return "the link address contains a space"
    if href.startswith("mailto:"):
        return None
    parts = urlsplit(href)
    if parts.scheme in ("http", "https") and parts.netloc:
        return None
    return (
        "the link address is not a full address starting with https:// "
        "(for a page of the app write `{{ link('/path') }}`)"
    )


_HREF_SOURCE = re.compile(r"""href\s*=\s*(["'])(.*?)\1""", re.S)
_JINJA_PART = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def href_line(files: Iterable[File], href: str) -> tuple[str, int] | None:
    """The source line whose `href="..."` produced a rendered link."""
    for file in files:
        for found in _HREF_SOURCE.finditer(file.source):
            literal = [re.escape(unescape(part)) for part in _JINJA_PART.split(found.group(2))]
            if re.fullmatch(".*?".join(literal), href, re.S):
                return file.name, file.source.count("\n", 0, found.start()) + 1
    return None
