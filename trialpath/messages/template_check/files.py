"""The template files as the check sees them: the front matter each channel takes, what a
file's name says (channel, message, persona, locale), the line of each front matter key, and
whether a locale is a language."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError

from trialpath.messages.templating import EXTENSIONS

FRONT_MATTER_KEYS = (
    "subject",
    "preheader",
    "title",
    "cta_label",
    "cta_path",
    "category",
    "description",
)
CHANNEL_KEYS: dict[str, frozenset[str]] = {
    "email": frozenset({"subject", "preheader", "category", "description"}),
    "support": frozenset({"subject", "preheader", "category", "description"}),
    "in_app": frozenset({"title", "cta_label", "cta_path", "category", "description"}),
    "sms": frozenset({"category", "description"}),
}
REQUIRED_KEYS = {"email": ("subject",), "support": ("subject",), "in_app": ("title",)}
TEXT_KEYS = ("subject", "preheader", "title", "cta_label", "cta_path")
CATEGORIES = ("marketing", "transactional")
CHANNEL_NAMES = {"email": "email", "support": "support email", "in_app": "in-app", "sms": "SMS"}


@dataclass
class File:
    name: str
    source: str = ""
    channel: str | None = None
    message: str | None = None
    who: str | None = None
    locale: str | None = None
    ext: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    meta_lines: dict[str, int] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)
    """Templates it extends or includes."""
    broken: bool = False
    """Cannot be rendered at all (already reported)."""

    @property
    def partial(self) -> bool:
        return Path(self.name).name.startswith("_")

    @property
    def primary(self) -> bool:
        """A message file of its channel (not an email's plain-text twin)."""
        return self.channel in EXTENSIONS and self.ext == EXTENSIONS[self.channel]


def describe_name(name: str) -> File:
    found = File(name)
    parts = name.split("/")
    if len(parts) != 2:
        return found
    pieces = parts[1].split(".")
    if len(pieces) == 5 and pieces[-1] == "j2" and all(pieces):
        found.channel = parts[0]
        found.message, found.who, found.locale, found.ext = pieces[:4]
    return found


def front_matter_lines(source: str) -> dict[str, int]:
    """The line of each top-level key of the front matter."""
    lines = source.splitlines()
    if not lines or not source.startswith("---"):
        return {}
    found: dict[str, int] = {}
    for number, text in enumerate(lines[1:], start=2):
        if text.strip() == "---":
            break
        key = re.match(r"([A-Za-z_][\w-]*)\s*:", text)
        if key:
            found.setdefault(key.group(1), number)
    return found


def known_locale(code: str) -> bool:
    try:
        Locale.parse(code)
    except (UnknownLocaleError, ValueError):
        return False
    return True
