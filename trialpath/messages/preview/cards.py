"""The preview's state and its cards, one per send: the view a page asks for, the message the
worker's own Renderer makes of it, the fallbacks used and any error in plain words with its file
and line. `BadView` is the answer to a query or journey file the page cannot show."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from starlette.exceptions import HTTPException as StarletteHTTPException

from trialpath.core.definition import DefinitionError, JourneyDefinition, Persona, load_definition
from trialpath.delivery.twilio import sms_segments
from trialpath.messages.preview.sends import CHANNEL_LABELS, Send, drip_owner
from trialpath.messages.samples import SampleUser, sample_context
from trialpath.messages.templating import (
    Product,
    Rendered,
    Renderer,
    TemplateProblem,
    split_front_matter,
)
from trialpath.operations.config import Settings

WIDTHS = {"desktop": 600, "mobile": 375}


@dataclass(frozen=True)
class View:
    persona: Persona
    locale: str
    sample: SampleUser
    width: Literal["desktop", "mobile"]

    def query(self, **changes: str) -> str:
        params = {
            "persona": self.persona,
            "locale": self.locale,
            "sample": self.sample.key,
            "width": self.width,
        }
        return urlencode({**params, **changes})


@dataclass(frozen=True)
class Fallback:
    kind: Literal["persona", "locale"]
    text: str


@dataclass(frozen=True)
class Card:
    send: Send
    url: str
    template: str | None = None
    """The file used after fallbacks; None when none exists."""
    rendered: Rendered | None = None
    error: str | None = None
    not_sent: str | None = None
    """Why a user of this persona never gets this message (another persona's drip)."""
    fallbacks: tuple[Fallback, ...] = ()
    notes: tuple[str, ...] = ()
    segments: tuple[str, int] | None = None
    over_segments: bool = False


def fallbacks_used(template: str | None, persona: str, locale: str) -> tuple[Fallback, ...]:
    """Each fallback that chose `template` instead of the persona's file in the locale."""
    parts = (template or "").rsplit("/", 1)[-1].split(".")
    if len(parts) != 5:
        return ()
    who, loc = parts[1], parts[2]
    used = []
    if who != persona:
        used.append(Fallback("persona", f"no {persona} file, {who} copy"))
    if loc != locale:
        used.append(Fallback("locale", f"no {locale} file, {loc} copy"))
    return tuple(used)


def describe_error(
    err: Exception, template: str | None, send: Send, templates_dir: Path, context: dict[str, Any]
) -> str:
    where = template or f"{send.channel}/{send.message}"
    if isinstance(err, TemplateProblem):
        message = str(err)
        if template and message.startswith(f"{template}: "):
            # The Renderer names no line for front-matter values (a subject): find the key.
            found = front_matter_failure(templates_dir / template, context)
            if found:
                line, key = found
                return f"{template}:{line}: {key}: {message.removeprefix(f'{template}: ')}"
        return message
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        # The YAML starts on the file's second line, after the opening `---`.
        return f"{where}:{err.problem_mark.line + 2}: invalid front matter: {err.problem}"
    return f"{where}: {type(err).__name__}: {err}"


def front_matter_failure(path: Path, context: dict[str, Any]) -> tuple[int, str] | None:
    """(line, key) of the first front-matter value that does not render, if one does not."""
    try:
        source = path.read_text(encoding="utf-8")
        meta, _, _ = split_front_matter(source)
    except (OSError, ValueError, TemplateProblem, yaml.YAMLError):
        return None
    strings = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    for key, value in meta.items():
        try:
            strings.from_string(str(value)).render(context)
        except TemplateError:
            for number, line in enumerate(source.splitlines(), 1):
                if line.startswith(f"{key}:"):
                    return number, str(key)
    return None


@dataclass
class Preview:
    settings: Settings
    renderer: Renderer = field(init=False)
    product: Product = field(init=False)
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set on Ctrl-C: open event streams end, so the server stops without waiting for tabs."""

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.settings.templates_dir)
        self.product = Product(
            name=self.settings.product_name,
            app_url=self.settings.product_app_url,
            company_address=self.settings.company_address,
            support_email=self.settings.support_email,
        )

    @property
    def templates_dir(self) -> Path:
        return self.settings.templates_dir

    def definition(self) -> JourneyDefinition:
        # Read on each page, like the templates: the page follows edits to the journey too.
        try:
            return load_definition(self.settings.journey_file)
        except DefinitionError as err:
            raise BadView(500, str(err)) from err

    def card(self, defn: JourneyDefinition, send: Send, view: View) -> Card:
        url = f"/message/{send.channel}/{send.message}?{view.query()}"
        owner = drip_owner(defn, send.message)
        if owner and owner != view.persona:
            why = f"{view.persona} users never receive {send.message}: it is in the {owner} drip."
            return Card(send, url, not_sent=why)
        notes = []
        if send.channel == "sms" and not view.sample.phone:
            fallback = defn.message(send.message).fallback
            instead = f"; the {CHANNEL_LABELS[fallback]} version goes instead" if fallback else ""
            notes.append(f"{view.sample.first_name} has no phone number: no SMS is sent{instead}.")
        context = sample_context(
            self.product, send.channel, send.message, view.persona, view.locale, view.sample
        )
        template = None
        try:
            template = self.renderer.resolve(send.channel, send.message, view.persona, view.locale)
            rendered = self.renderer.render(
                send.channel, send.message, view.persona, view.locale, context
            )
        except Exception as err:  # any failure belongs on its card; the rest of the page renders
            return Card(
                send,
                url,
                template=template,
                error=describe_error(err, template, send, self.templates_dir, context),
                fallbacks=fallbacks_used(template, view.persona, view.locale),
                notes=tuple(notes),
            )
        segments = sms_segments(rendered.text) if send.channel == "sms" else None
        return Card(
            send,
            url,
            template=rendered.template,
            rendered=rendered,
            fallbacks=fallbacks_used(rendered.template, view.persona, view.locale),
            notes=tuple(notes),
            segments=segments,
            over_segments=bool(segments and segments[1] > self.settings.sms_max_segments),
        )


class BadView(StarletteHTTPException):
    """A query value the page cannot show; answered as a short HTML page, not a traceback."""
