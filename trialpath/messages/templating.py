"""Rendering message templates: sandboxed Jinja2, front matter, persona and locale fallbacks.

Layout: `templates/<channel>/<message>.<persona|default>.<locale>.<ext>.j2` (see docs/templates.md).
Jinja's loader checks file modification times, so an edited template is used on the next send
without restarting the worker.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import css_inline
import html2text
import yaml
from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_decimal
from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    pass_context,
)
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

EXTENSIONS = {"email": "html", "support": "html", "in_app": "txt", "sms": "txt"}
FALLBACK_LOCALE = "en"
DEFAULT_PERSONA = "default"


class TemplateProblem(Exception):
    """A template is missing or cannot be rendered; names the file and the reason."""


def split_front_matter(source: str) -> tuple[dict[str, Any], str, int]:
    """Returns (front matter, body, number of front-matter lines)."""
    if not source.startswith("---"):
        return {}, source, 0
    lines = source.splitlines(keepends=True)
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            meta = copy.deepcopy(_front_matter("".join(lines[1:i]))) or {}
            if not isinstance(meta, dict):
                raise TemplateProblem("front matter must be a mapping of keys to values")
            return meta, "".join(lines[i + 1 :]), i + 1
    raise TemplateProblem("front matter opened with --- but never closed")


# libyaml's parser where PyYAML has it (its wheels do): the same documents, several times
# faster. Each template's front matter is read at every render (and by the check, for each
# sample user), so the parsed text is kept too; callers get a copy.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=1024)
def _front_matter(text: str) -> Any:
    return yaml.load(text, Loader=_YAML_LOADER)


class _BodyLoader(FileSystemLoader):
    """Loads a template without its front matter, keeping line numbers for error messages."""

    def get_source(  # type: ignore[override]
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = super().get_source(environment, template)
        _, body, skipped = split_front_matter(source)
        return "\n" * skipped + body, filename, uptodate


def _locale(ctx: Context) -> str:
    user = ctx.get("user")
    return str(user.get("locale", FALLBACK_LOCALE)) if isinstance(user, Mapping) else "en"


def _zone(ctx: Context) -> ZoneInfo:
    user = ctx.get("user")
    return ZoneInfo(str(user.get("timezone", "UTC")) if isinstance(user, Mapping) else "UTC")


@pass_context
def _date_filter(ctx: Context, value: date | datetime, format: str = "long") -> str:
    """`{{ trial.ends_on_date | date }}`: a date in the user's language (short, medium, long,
    full, or a pattern such as "d MMMM")."""
    if isinstance(value, datetime):
        value = value.astimezone(_zone(ctx)).date()
    return str(format_date(value, format, locale=_locale(ctx)))


@pass_context
def _datetime_filter(ctx: Context, value: datetime, format: str = "medium") -> str:
    """`{{ call.starts_at | datetime("full") }}`: in the user's language and time zone."""
    return str(format_datetime(value, format, tzinfo=_zone(ctx), locale=_locale(ctx)))


@pass_context
def _time_filter(ctx: Context, value: datetime, format: str = "short") -> str:
    return str(format_time(value, format, tzinfo=_zone(ctx), locale=_locale(ctx)))


@pass_context
def _number_filter(ctx: Context, value: float) -> str:
    """`{{ 1234.5 | number }}` → `1,234.5` in English, `1 234,5` in French."""
    return str(format_decimal(value, locale=_locale(ctx)))


FILTERS: dict[str, Callable[..., str]] = {
    "date": _date_filter,
    "datetime": _datetime_filter,
    "time": _time_filter,
    "number": _number_filter,
}


def make_environment(templates_dir: Path) -> SandboxedEnvironment:
    loader: BaseLoader = _BodyLoader(str(templates_dir.resolve()))
    env = SandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        auto_reload=True,
        keep_trailing_newline=False,
    )
    env.filters.update(FILTERS)
    return env


@dataclass(frozen=True)
class Rendered:
    channel: str
    template: str
    """Path of the chosen file, relative to the templates folder."""
    content_hash: str
    category: str
    subject: str
    preheader: str
    html: str
    text: str
    title: str
    cta_label: str
    cta_url: str


class Renderer:
    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = make_environment(templates_dir)
        self._text_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._text_env.filters.update(FILTERS)
        # Parsed front matter by file content, compiled front-matter strings by source: an
        # edited file has other content, so edits apply on the next send, no restart needed.
        self._meta: dict[bytes, dict[str, Any]] = {}
        self._strings: dict[str, Template] = {}

    def resolve(self, channel: str, message: str, persona: str | None, locale: str) -> str:
        """The file used for a message: persona then `default`, locale then `en`."""
        ext = EXTENSIONS[channel]
        personas = [p for p in (persona, DEFAULT_PERSONA) if p]
        locales = list(dict.fromkeys([locale, FALLBACK_LOCALE]))
        tried = []
        for loc in locales:
            for who in personas:
                name = f"{channel}/{message}.{who}.{loc}.{ext}.j2"
                if (self.templates_dir / name).is_file():
                    return name
                tried.append(name)
        raise TemplateProblem(f"no template for {channel} message {message!r}; looked for {tried}")

    def render(
        self,
        channel: str,
        message: str,
        persona: str | None,
        locale: str,
        context: Mapping[str, Any],
    ) -> Rendered:
        name = self.resolve(channel, message, persona, locale)
        path = self.templates_dir / name
        raw = path.read_bytes()
        digest = hashlib.sha256(raw)
        try:
            meta = self._front_matter(raw, digest.digest())
            strings = {k: self._render_string(str(v), context) for k, v in meta.items()}
            full = {**context, **strings}
            body = self.env.get_template(name).render(full).strip()
            text = ""
            html = ""
            if EXTENSIONS[channel] == "html":
                html = inline_css(body)
                twin = name.removesuffix(".html.j2") + ".txt.j2"
                if (self.templates_dir / twin).is_file():
                    digest.update((self.templates_dir / twin).read_bytes())
                    text = self.env.get_template(twin).render(full).strip()
                else:
                    text = html_to_text(html)
            else:
                text = body
        except TemplateProblem as err:
            raise TemplateProblem(f"{name}: {err}") from err
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{name}:{mark.line + 2}" if mark is not None else name  # after the ---
            problem = getattr(err, "problem", None) or str(err)
            raise TemplateProblem(f"{where}: invalid front matter: {problem}") from err
        except Exception as err:
            # Syntax errors, undefined variables, and anything the template's own code raises
            # (adding text to a number...): all are a broken template, named with file:line.
            raise TemplateProblem(f"{_where(err, name, self.templates_dir)}: {err}") from err
        cta_path = strings.get("cta_path", "")
        links = context.get("links", {})
        cta_url = (
            context["link"](cta_path)
            if cta_path
            else links.get("call", "")
            if channel == "in_app"
            else ""
        )
        return Rendered(
            channel=channel,
            template=name,
            content_hash=digest.hexdigest(),
            category=strings.get("category", "marketing"),
            subject=strings.get("subject", ""),
            preheader=strings.get("preheader", ""),
            html=html,
            text=text,
            title=strings.get("title", ""),
            cta_label=strings.get("cta_label", ""),
            cta_url=cta_url,
        )

    def _front_matter(self, raw: bytes, digest: bytes) -> dict[str, Any]:
        meta = self._meta.get(digest)
        if meta is None:
            meta, _, _ = split_front_matter(raw.decode("utf-8"))
            if len(self._meta) > 2000:
                self._meta.clear()
            self._meta[digest] = meta
        return meta

    def _render_string(self, value: str, context: Mapping[str, Any]) -> str:
        if "{" not in value:
            return value
        template = self._strings.get(value)
        if template is None:
            template = self._text_env.from_string(value)
            if len(self._strings) > 5000:
                self._strings.clear()
            self._strings[value] = template
        return template.render(context).strip()


def _where(err: BaseException, name: str, templates_dir: Path) -> str:
    """`file:line` of a template error. Syntax errors carry both; runtime errors (an undefined
    variable) carry neither, but Jinja rewrites the traceback so the failing template's frame
    points at its line, which may be in a base layout rather than in `name`."""
    filename = getattr(err, "filename", None)
    line = getattr(err, "lineno", None)
    root = templates_dir.resolve()
    if line is None:
        for frame in reversed(traceback.extract_tb(err.__traceback__)):
            if frame.filename.startswith(str(root)):
                filename, line = frame.filename, frame.lineno
                break
    if filename:
        with contextlib.suppress(ValueError):  # a file outside the folder keeps `name`
            name = Path(filename).resolve().relative_to(root).as_posix()
    return f"{name}:{line}" if line else name


_INLINER = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)


def inline_css(html: str) -> str:
    """Copies the `<style>` rules onto each element (Gmail and Outlook ignore most `<style>`
    blocks), keeping the block for clients that read it (media queries)."""
    inlined: str = _INLINER.inline(html)
    return inlined


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    text: str = converter.handle(html)
    return text.strip()


# --- Context ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    name: str
    app_url: str
    company_address: str
    support_email: str


def make_link(app_url: str, channel: str, message: str) -> Callable[[str], str]:
    """Builds app links with UTM parameters naming the channel and message."""
    utm = urlencode({"utm_source": "trialpath", "utm_medium": channel, "utm_campaign": message})

    def link(path: str = "/") -> str:
        if path.startswith(("http://", "https://")):
            base = path
        else:
            base = app_url.rstrip("/") + "/" + path.lstrip("/")
        return base + ("&" if "?" in base else "?") + utm

    return link


def format_call(at: datetime | None, tz: str, locale: str) -> tuple[str, str]:
    """The call time as the user reads it: a full phrase and the time alone."""
    if at is None:
        return "", ""
    local = at.astimezone(ZoneInfo(tz))
    if locale == "fr":
        full = format_datetime(local, "EEEE d MMMM 'à' HH:mm", tzinfo=ZoneInfo(tz), locale="fr")
    else:
        full = format_datetime(local, "EEEE d MMMM 'at' HH:mm", tzinfo=ZoneInfo(tz), locale="en")
    short = format_time(local, "HH:mm", tzinfo=ZoneInfo(tz), locale=locale)
    return f"{full} ({tz})", short


NO_AGENT = {"en": "our team", "fr": "notre équipe"}
"""Who the call is with while no agent has it, in the user's language."""


def message_context(
    *,
    product: Product,
    channel: str,
    message: str,
    user: Mapping[str, Any],
    persona: str | None,
    trial: Mapping[str, Any],
    call: Mapping[str, Any] | None = None,
    alert: Mapping[str, Any] | None = None,
    unsubscribe_url: str | None = None,
    survey_links: list[tuple[int, str]] | None = None,
    book_call_url: str | None = None,
) -> dict[str, Any]:
    """The documented template variables (docs/templates.md), built from plain values."""
    locale = user.get("locale", "en")
    tz = user.get("timezone", "UTC")
    link = make_link(product.app_url, channel, message)
    call = call or {}
    call_at, call_time = format_call(call.get("at"), tz, locale)
    ends_on = trial.get("ends_on")
    name = str(user.get("name", ""))
    return {
        "user": {
            "first_name": name.split()[0] if name.split() else name,
            "name": name,
            "company": user.get("company") or "",
            "locale": locale,
            "timezone": tz,
        },
        "persona": persona or "business",
        "product": {
            "name": product.name,
            "company_address": product.company_address,
            "support_email": product.support_email,
            "app_url": product.app_url,
        },
        "trial": {
            "day": trial.get("day", 0),
            "days_left": trial.get("days_left", 0),
            "ends_on": format_date(ends_on, "long", locale=locale) if ends_on else "",
            "ends_on_date": ends_on,
            "activated": bool(trial.get("activated", False)),
            "activation_progress": trial.get("activation_progress", 0),
            # The day the user activated on (the send day when unknown: older workers).
            "activated_day": (
                trial["activated_day"]
                if trial.get("activated_day") is not None
                else trial.get("day", 0)
            ),
            "extended_days": trial.get("extended_days", 0),
            "plan": trial.get("plan") or "",
        },
        "call": {
            "at": call_at,
            "time": call_time,
            "starts_at": call.get("at"),
            # A call no agent is free for yet (the user chose the time): support finds one.
            "agent": call.get("agent") or NO_AGENT.get(locale, NO_AGENT["en"]),
            "duration_minutes": call.get("duration_minutes", 30),
        },
        "links": {
            "app": link("/"),
            "docs": link("/docs"),
            "book_call": book_call_url or link("/call/book"),
            "upgrade": link("/billing/upgrade"),
            "extend": link("/trial/extend"),
            "call": link("/call/join"),
            "unsubscribe": unsubscribe_url or link("/settings/notifications/unsubscribe"),
            "preferences": link("/settings/notifications"),
        },
        "link": link,
        "alert": dict(alert or {}),
        "survey": {"links": list(survey_links or [])},
    }
