"""Checking message templates before they are deployed (`trialpath templates check`).

Marketers edit the files under `templates/`; a mistake there only shows when the worker fails
to send a message, days into someone's trial. This renders every message the journey can send,
for every persona, every language found in the file names and a few sample users, the way the
worker renders it (the real `Renderer`, `message_context` and `StrictUndefined`), and reports
what would go wrong in plain words, with the file and line to fix.

Checks made on each file, used or not: readable front matter and Jinja syntax, known variables
(including in `{% if %}` branches no sample user reaches), `link('/path')` paths. Checks made on
each render: undefined variables, empty subject or title, broken links, the unsubscribe link of
marketing email, HTML size, SMS segments. Then: messages with no template, files no message
uses, and English files with no translation.

A pure library: it prints nothing (the CLI prints the report).
"""

from __future__ import annotations

import difflib
import os
import re
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from babel import Locale, UnknownLocaleError
from jinja2 import (
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.sandbox import SandboxedEnvironment

from trialpath.core.definition import PERSONAS, JourneyDefinition
from trialpath.delivery.preferences import UnsubscribeTokens
from trialpath.delivery.twilio import GSM_BASIC, GSM_EXTENSION, sms_segments
from trialpath.messages.samples import (
    ALERT_MESSAGES,
    SAMPLE_USERS,
    SampleUser,
    sample_alert,
    sample_context,
)
from trialpath.messages.templating import (
    DEFAULT_PERSONA,
    EXTENSIONS,
    FALLBACK_LOCALE,
    Product,
    Renderer,
    TemplateProblem,
    split_front_matter,
)

Severity = Literal["error", "warning"]

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

# Gmail cuts messages over 102 KB behind a "View entire message" link, unsubscribe link included.
HTML_MAX_BYTES = 100 * 1024
HTML_WARN_BYTES = 80 * 1024

# Typographic characters with a GSM-7 twin: one of them turns a whole SMS into UCS-2, which
# fits 70 characters a segment instead of 160.
STRAIGHT = {
    "\u2019": "'",
    "\u2018": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2026": "...",
    "\u2013": "-",
    "\u2014": "-",
    "\u00a0": " ",
    "\u202f": " ",
}
_STRAIGHT_TABLE = str.maketrans(STRAIGHT)

_DICT_METHODS = frozenset({"get", "items", "keys", "values"})


@dataclass(frozen=True)
class Finding:
    severity: Severity
    file: str
    """Path relative to the templates folder."""
    line: int | None
    message: str
    context: str = ""
    """Which render showed it, e.g. "persona business, locale fr, sample user 'sam'"."""

    def located(self) -> str:
        """`file:line: message  (context)`."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.message}"
        return f"{text}  ({self.context})" if self.context else text

    def __str__(self) -> str:
        return f"{self.severity}: {self.located()}"


@dataclass
class CheckReport:
    findings: list[Finding]
    rendered: int
    """How many renders were done."""
    templates: int = 0
    """How many template files were checked."""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        errors, warnings = len(self.errors), len(self.warnings)
        return (
            f"Checked {self.rendered} renders of {self.templates} templates: "
            f"{errors} error{'' if errors == 1 else 's'}, "
            f"{warnings} warning{'' if warnings == 1 else 's'}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rendered": self.rendered,
            "templates": self.templates,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }


# --- Files -----------------------------------------------------------------------------------


@dataclass
class _File:
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


def _describe_name(name: str) -> _File:
    found = _File(name)
    parts = name.split("/")
    if len(parts) != 2:
        return found
    pieces = parts[1].split(".")
    if len(pieces) == 5 and pieces[-1] == "j2" and all(pieces):
        found.channel = parts[0]
        found.message, found.who, found.locale, found.ext = pieces[:4]
    return found


def _front_matter_lines(source: str) -> dict[str, int]:
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


def _language(code: str) -> str:
    try:
        return str(Locale.parse(code).get_display_name("en"))
    except (UnknownLocaleError, ValueError):
        return code


def _known_locale(code: str) -> bool:
    try:
        Locale.parse(code)
    except (UnknownLocaleError, ValueError):
        return False
    return True


# --- Jinja errors in plain words -------------------------------------------------------------


def _syntax_message(err: TemplateSyntaxError) -> str:
    text = err.message or str(err)
    hint = ""
    if "end of print statement" in text or "unexpected '}'" in text:
        hint = " (check that every `{{` is closed by `}}`)"
    elif "unknown tag" in text or "unexpected end of template" in text:
        hint = (
            " (check the spelling of each `{% ... %}` tag, and that every `{% if %}`,"
            " `{% for %}` and `{% block %}` has its `{% end... %}`)"
        )
    elif "end of statement block" in text:
        hint = " (check that every `{%` is closed by `%}`)"
    return f"Jinja cannot read this line: {text}{hint}"


def _template_frame(err: BaseException, root: Path) -> tuple[str, int] | None:
    """The innermost template frame of an error: Jinja rewrites tracebacks so the template's
    own frame names its file and line."""
    prefix = str(root.resolve()) + os.sep
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename.startswith(prefix) and frame.lineno:
            name = Path(frame.filename).resolve().relative_to(root.resolve()).as_posix()
            return name, frame.lineno
    return None


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_UNDEFINED_ATTR = re.compile(r"has no (?:attribute|element) '?([^']+)'?$")


def _path_on_line(text: str, name: str, attribute: bool) -> str:
    """The dotted variable (`user.frist_name`) a failing line uses, from the name Jinja gives."""
    if attribute:
        pattern = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\." + re.escape(name) + r"\b"
    else:
        pattern = r"(?<![\w.])" + re.escape(name) + r"(?:\.[A-Za-z_]\w*)?\b"
    found = re.search(pattern, text)
    return found.group(0) if found else name


class _Variables:
    """The documented template variables, for "did you mean" suggestions."""

    def __init__(self, context: Mapping[str, Any], env: SandboxedEnvironment) -> None:
        self.groups: dict[str, frozenset[str]] = {
            key: frozenset(value) for key, value in context.items() if isinstance(value, dict)
        }
        self.top = frozenset(context) | frozenset(FRONT_MATTER_KEYS)
        self.allowed_top = self.top | frozenset(env.globals)
        self.documented = sorted(
            [k for k in self.top if k not in self.groups]
            + [f"{group}.{key}" for group, keys in self.groups.items() for key in keys]
        )

    def unknown(self, path: str) -> bool:
        top, _, rest = path.partition(".")
        if top not in self.allowed_top:
            return True
        attribute = rest.split(".")[0]
        return bool(
            attribute
            and top in self.groups
            and attribute not in self.groups[top]
            and attribute not in _DICT_METHODS
        )

    def message(self, path: str) -> str:
        if path in self.documented:
            if path.startswith("alert."):
                return f"`{path}` is only filled in support alerts, not in this message"
            return f"`{path}` is empty in this message"
        text = f"the variable `{path}` does not exist"
        close = difflib.get_close_matches(path, self.documented, n=1, cutoff=0.6)
        top = path.partition(".")[0]
        if close:
            text += f" (did you mean `{close[0]}`?)"
        elif top in self.groups:
            text += f" (`{top}` has: {', '.join(sorted(self.groups[top]))})"
        return text


def _used_variables(ast: nodes.Template) -> Iterator[tuple[str, int]]:
    """(dotted variable, line) for each context variable a template reads; names the template
    sets itself (`{% set %}`, `{% for %}`, macro arguments) are left out."""
    undeclared = meta.find_undeclared_variables(ast)
    seen: set[int] = set()
    lookups: list[tuple[nodes.Expr, str | None, int]] = [
        (n.node, n.attr, n.lineno) for n in ast.find_all(nodes.Getattr)
    ]
    lookups += [
        (n.node, n.arg.value if isinstance(n.arg, nodes.Const) else None, n.lineno)
        for n in ast.find_all(nodes.Getitem)
    ]
    for target, attribute, line in sorted(lookups, key=lambda item: item[2]):
        if not isinstance(target, nodes.Name) or target.name not in undeclared:
            continue
        seen.add(id(target))
        if isinstance(attribute, str):
            yield f"{target.name}.{attribute}", line
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in undeclared and id(name) not in seen:
            yield name.name, name.lineno


def _link_paths(ast: nodes.Template) -> Iterator[tuple[str, int]]:
    """(path, line) for each `link('...')` call with a literal path."""
    for call in ast.find_all(nodes.Call):
        if (
            isinstance(call.node, nodes.Name)
            and call.node.name == "link"
            and call.args
            and isinstance(call.args[0], nodes.Const)
            and isinstance(call.args[0].value, str)
        ):
            yield call.args[0].value, call.lineno


def _path_problem(path: str) -> str | None:
    if path.startswith(("/", "https://", "http://")):
        return None
    return f"the app path `{path}` must start with `/` (write `/{path.lstrip('./')}`)"


# --- Links in HTML ---------------------------------------------------------------------------


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


def _href_line(files: Iterable[_File], href: str) -> tuple[str, int] | None:
    """The source line whose `href="..."` produced a rendered link."""
    for file in files:
        for found in _HREF_SOURCE.finditer(file.source):
            literal = [re.escape(unescape(part)) for part in _JINJA_PART.split(found.group(2))]
            if re.fullmatch(".*?".join(literal), href, re.S):
                return file.name, file.source.count("\n", 0, found.start()) + 1
    return None


# --- The check -------------------------------------------------------------------------------


def check_templates(
    templates_dir: Path,
    definition: JourneyDefinition,
    *,
    product: Product,
    public_url: str = "https://api.acme.example",
    sms_max_segments: int = 3,
    samples: Sequence[SampleUser] | None = None,
) -> CheckReport:
    """Checks every `.j2` file under `templates_dir` and renders every message `definition`
    sends, for every persona, locale and sample user (by default the previews' samples)."""
    chosen = tuple(SAMPLE_USERS.values()) if samples is None else samples
    return _Checker(templates_dir, definition, product, public_url, sms_max_segments, chosen).run()


class _Checker:
    def __init__(
        self,
        root: Path,
        definition: JourneyDefinition,
        product: Product,
        public_url: str,
        sms_max_segments: int,
        samples: Sequence[SampleUser],
    ) -> None:
        self.root = root
        self.defn = definition
        self.product = product
        self.public_url = public_url.rstrip("/")
        self.sms_max_segments = sms_max_segments
        self.samples = samples
        self.renderer = Renderer(root)
        self.env = self.renderer.env
        self.text_env = SandboxedEnvironment(undefined=StrictUndefined)
        # Links like the worker's, signed for a sample user; only email and in-app get one.
        tokens = UnsubscribeTokens("template-check")
        self.unsubscribe_urls = {
            channel: f"{self.public_url}/v1/unsubscribe/{tokens.make('u-sample-1', channel)}"
            for channel in ("email", "in_app")
        }
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, int | None, str]] = set()
        self.files: dict[str, _File] = {}
        self.used: set[str] = set()
        self.rendered = 0
        self.sends = self._journey_sends()
        documented = sample_context(
            product, "support", "support_alert", "business", "en", next(iter(samples))
        )
        # Every alert's facts: each alert template is rendered with its own when checked.
        documented["alert"] = {
            key: value
            for name in ALERT_MESSAGES
            for key, value in (sample_alert(name, "u", "business", "", True) or {}).items()
        }
        self.variables = _Variables(documented, self.env)

    def add(
        self,
        severity: Severity,
        file: str,
        line: int | None,
        message: str,
        context: str = "",
        *,
        once: str = "",
    ) -> None:
        """Identical findings (other sample users, personas...) are kept once, with the first
        context; `once` names a problem to report only once per file whatever its wording."""
        key = (file, None, once) if once else (file, line, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(severity, file, line, message, context))

    def run(self) -> CheckReport:
        for path in sorted(self.root.rglob("*.j2")):
            if path.is_file():
                name = path.relative_to(self.root).as_posix()
                self.files[name] = self._read(name, path)
        locales = self._locales()
        self._render_journey(locales)
        self._check_translations(locales)
        self._check_unused()
        order = {"error": 0, "warning": 1}
        findings = sorted(self.findings, key=lambda f: (order[f.severity], f.file, f.line or 0))
        return CheckReport(findings, self.rendered, len(self.files))

    # --- each file ---------------------------------------------------------------------------

    def _read(self, name: str, path: Path) -> _File:
        file = _describe_name(name)
        try:
            file.source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            file.broken = True
            self.add("error", name, None, "the file is not saved as UTF-8 text")
            return file
        file.meta_lines = _front_matter_lines(file.source)
        try:
            file.meta, body, skipped = split_front_matter(file.source)
        except TemplateProblem as err:
            file.broken = True
            problem = (
                "it must be `key: value` lines between the two `---` lines"
                if "mapping" in str(err)
                else str(err)
            )
            self.add("error", name, 1, f"the front matter cannot be read: {problem}")
            return file
        except yaml.YAMLError as err:
            file.broken = True
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 2 if mark is not None else 1
            problem = getattr(err, "problem", None) or str(err)
            hint = (
                " (put the value in double quotes when it contains a colon)"
                if "mapping values" in problem
                else ""
            )
            self.add("error", name, line, f"the front matter is not valid: {problem}{hint}")
            return file
        self._check_front_matter(file)
        try:
            ast = self.env.parse("\n" * skipped + body, name, str(path))
        except TemplateSyntaxError as err:
            file.broken = True
            self.add("error", name, err.lineno, _syntax_message(err))
            return file
        self._check_ast(file, ast, None)
        for ref in meta.find_referenced_templates(ast):
            if ref is None:
                continue
            file.refs.add(ref)
            if not (self.root / ref).is_file():
                file.broken = True
                line = next((n.lineno for n in ast.find_all(nodes.Const) if n.value == ref), None)
                others = [n for n in self._all_names() if n != name]
                close = difflib.get_close_matches(ref, others, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                self.add("error", name, line, f"uses `{ref}`, which does not exist{hint}")
        return file

    def _all_names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*.j2")]

    def _check_front_matter(self, file: _File) -> None:
        name, meta_ = file.name, file.meta
        if file.partial:
            return
        lines = file.meta_lines
        for key, value in meta_.items():
            line = lines.get(str(key))
            if key not in FRONT_MATTER_KEYS:
                close = difflib.get_close_matches(str(key), FRONT_MATTER_KEYS, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                allowed = ", ".join(FRONT_MATTER_KEYS)
                self.add(
                    "warning",
                    name,
                    line,
                    f"unknown front matter key `{key}`{hint}; known keys: {allowed}",
                )
                continue
            if file.channel in CHANNEL_KEYS and key not in CHANNEL_KEYS[file.channel]:
                self.add(
                    "warning",
                    name,
                    line,
                    f"`{key}` has no effect in {CHANNEL_NAMES[file.channel]} messages",
                )
            if value is None and key in TEXT_KEYS:
                continue  # reported as missing below, or harmless
            if key in TEXT_KEYS and not isinstance(value, str):
                self.add(
                    "warning",
                    name,
                    line,
                    f"`{key}` is read as {value!r}, not as text: put the value in double quotes",
                )
            if isinstance(value, str) and "{" in value:
                try:
                    ast = self.text_env.parse(value)
                except TemplateSyntaxError as err:
                    file.broken = True
                    self.add("error", name, line, _syntax_message(err))
                    continue
                self._check_ast(file, ast, line)
        if file.primary and file.channel:
            for key in REQUIRED_KEYS.get(file.channel, ()):
                if not meta_.get(key):
                    self.add(
                        "error",
                        name,
                        lines.get(key),
                        f"no `{key}:` in the front matter: every "
                        f"{CHANNEL_NAMES[file.channel]} message needs one",
                    )
        cta_path = meta_.get("cta_path")
        if isinstance(cta_path, str) and "{" not in cta_path:  # else checked once rendered
            problem = _path_problem(cta_path)
            if problem:
                self.add("error", name, lines.get("cta_path"), problem)
        self._check_in_app_first(file)
        self._check_category(file)

    def _check_in_app_first(self, file: _File) -> None:
        """A card that goes before its email (`unless_read_hours`) is what the user acts on: it
        should have its button, as the email has its link."""
        if not (file.primary and file.channel == "in_app" and file.message):
            return
        if file.meta.get("cta_label"):
            return
        try:
            spec = self.defn.message(file.message)
        except KeyError:
            return
        if spec.unless_read_hours is not None:
            self.add(
                "warning",
                file.name,
                None,
                f"`{file.message}` goes in-app first (unless_read_hours), and this card has no "
                "`cta_label:`: the user gets no button to act on it",
            )

    def _check_category(self, file: _File) -> None:
        category = file.meta.get("category")
        line = file.meta_lines.get("category")
        if category is None:
            if file.primary and file.channel in ("in_app", "sms"):
                self.add("warning", file.name, line, "no `category:` in the front matter")
            return
        if category not in CATEGORIES:
            self.add(
                "error",
                file.name,
                line,
                f"`category: {category}` is not a category: use marketing or transactional",
            )
            return
        if not file.message or not file.primary:
            return
        try:
            spec = self.defn.message(file.message)
        except KeyError:
            return
        if category != spec.category:
            self.add(
                "error",
                file.name,
                line,
                f"`category: {category}` disagrees with the journey, which sends "
                f"`{file.message}` as {spec.category} (write `category: {spec.category}`)",
            )

    def _check_ast(self, file: _File, ast: nodes.Template, line: int | None) -> None:
        """Variables and app paths; `line` is the front matter line of a front matter value."""
        for path, at in _used_variables(ast):
            if self.variables.unknown(path):
                self.add("error", file.name, line or at, self.variables.message(path))
        for path, at in _link_paths(ast):
            problem = _path_problem(path)
            if problem:
                self.add("error", file.name, line or at, problem)

    def _locales(self) -> list[str]:
        found: dict[str, None] = {FALLBACK_LOCALE: None}
        for file in self.files.values():
            if file.locale is None or file.partial or file.locale in found:
                continue
            if _known_locale(file.locale):
                found[file.locale] = None
        return list(found)

    # --- renders -----------------------------------------------------------------------------

    def _journey_sends(self) -> list[tuple[str, str, str]]:
        """(message, channel, persona) for every send the journey can make."""
        sends: list[tuple[str, str, str]] = []
        for message, spec in self.defn.messages.items():
            channels = dict.fromkeys((*spec.channels, *((spec.fallback,) if spec.fallback else ())))
            for channel in channels:
                sends.extend((message, channel, persona) for persona in PERSONAS)
        for persona, path in self.defn.personas.items():
            for step in path.drip:
                sends.extend((step.message, channel, persona) for channel in step.channels)
        return sends

    def _render_journey(self, locales: list[str]) -> None:
        missing: dict[tuple[str, str], list[str]] = {}
        for message, channel, persona in self.sends:
            category = self.defn.message(message).category
            for locale in locales:
                try:
                    name = self.renderer.resolve(channel, message, persona, locale)
                except TemplateProblem:
                    if persona not in missing.setdefault((message, channel), []):
                        missing[(message, channel)].append(persona)
                    continue
                chain = self._chain(name)
                self.used.update(f.name for f in chain)
                if any(f.broken for f in chain):
                    continue
                for sample in self.samples:
                    if channel == "sms" and not sample.phone:
                        continue  # the worker sends SMS only to users with a phone number
                    self._render_one(chain, message, channel, persona, locale, category, sample)
        for (message, channel), personas in missing.items():
            ext = EXTENSIONS[channel]
            every = {p for m, c, p in self.sends if (m, c) == (message, channel)}
            whom = "" if set(personas) == every else f" for persona {', '.join(personas)}"
            self.add(
                "error",
                f"{channel}/{message}.{DEFAULT_PERSONA}.{FALLBACK_LOCALE}.{ext}.j2",
                None,
                f"the journey sends `{message}` as {CHANNEL_NAMES[channel]} but there is no "
                f"template{whom}: add this file (or one per persona)",
            )

    def _chain(self, name: str) -> list[_File]:
        """The file, its plain-text twin, and every file they extend or include."""
        names = [name]
        if name.endswith(".html.j2"):
            twin = name.removesuffix(".html.j2") + ".txt.j2"
            if twin in self.files:
                names.append(twin)
        chain: list[_File] = []
        while names:
            current = names.pop(0)
            file = self.files.get(current)
            if file is None or file in chain:
                continue
            chain.append(file)
            names.extend(sorted(file.refs))
        return chain

    def _render_one(
        self,
        chain: list[_File],
        message: str,
        channel: str,
        persona: str,
        locale: str,
        category: str,
        sample: SampleUser,
    ) -> None:
        name = chain[0].name
        where = f"persona {persona}, locale {locale}, sample user '{sample.key}'"
        unsubscribe = self.unsubscribe_urls.get(channel)
        context = sample_context(
            self.product, channel, message, persona, locale, sample, unsubscribe_url=unsubscribe
        )
        self.rendered += 1
        try:
            out = self.renderer.render(channel, message, persona, locale, context)
        except TemplateProblem as err:
            self._render_error(name, err.__cause__ or err, where)
            return
        except Exception as err:
            # Not a Jinja error (a filter given the wrong type...): the worker would fail too.
            self._render_error(name, err, where)
            return
        if not out.text.strip():
            self.add("error", name, None, "the message is empty for this user", where)
        if channel in ("email", "support"):
            if not out.subject:
                self.add("error", name, None, "the subject is empty for this user", where)
            self._check_html(chain, out.html, category, channel, context, where)
        elif channel == "in_app":
            if not out.title:
                self.add("error", name, None, "the title is empty for this user", where)
            cta_path = chain[0].meta.get("cta_path")
            if isinstance(cta_path, str) and "{" in cta_path:
                problem = _path_problem(self.text_env.from_string(cta_path).render(context))
                if problem:
                    line = chain[0].meta_lines.get("cta_path")
                    self.add("error", name, line, f"`cta_path`: {problem}", where)
        elif channel == "sms":
            self._check_sms(chain[0], out.text, where)

    def _render_error(self, name: str, err: BaseException, where: str) -> None:
        frame = _template_frame(err, self.root)
        if isinstance(err, UndefinedError):
            text = err.message or ""
            missing = _UNDEFINED_NAME.match(text)
            attribute = _UNDEFINED_ATTR.search(text)
            if missing and missing.group(1) in FRONT_MATTER_KEYS:
                # A front matter value the file (or the layout it extends) shows.
                key = missing.group(1)
                channel = self.files[name].channel
                if channel and key in REQUIRED_KEYS.get(channel, ()):
                    return  # reported when the file was read
                text = f"no `{key}:` in the front matter"
                if frame and frame[0] != name:
                    text += f", which {frame[0]} needs (line {frame[1]})"
                elif frame:
                    text += f", but line {frame[1]} uses `{key}`"
                self.add("error", name, None, text, where)
                return
            token = missing.group(1) if missing else attribute.group(1) if attribute else ""
            if frame is None:
                frame = self._front_matter_line(name, token)
            if frame is not None:
                source = self.files[frame[0]].source.splitlines()
                text_line = source[frame[1] - 1] if frame[1] <= len(source) else ""
                path = _path_on_line(text_line, token, missing is None)
                self.add("error", frame[0], frame[1], self.variables.message(path), where)
                return
            self.add("error", name, None, self.variables.message(token or text), where)
            return
        file, line = frame or (name, None)
        if isinstance(err, TemplateError):
            detail = err.message or str(err)
        else:
            detail = f"{type(err).__name__}: {err}"
        self.add("error", file, line, f"the message cannot be rendered: {detail}", where)

    def _front_matter_line(self, name: str, token: str) -> tuple[str, int] | None:
        """Front matter values are rendered from strings, so errors there carry no file line."""
        file = self.files[name]
        lines = file.source.splitlines()
        for key, line in file.meta_lines.items():
            if token and key in TEXT_KEYS and token in lines[line - 1]:
                return name, line
        return None

    def _check_html(
        self,
        chain: list[_File],
        html: str,
        category: str,
        channel: str,
        context: Mapping[str, Any],
        where: str,
    ) -> None:
        name = chain[0].name
        size = len(html.encode("utf-8"))
        if size > HTML_WARN_BYTES:
            self.add(
                "error" if size > HTML_MAX_BYTES else "warning",
                name,
                None,
                f"the email is {size / 1024:.0f} KB of HTML; Gmail cuts emails over 102 KB "
                f"(keep it under {HTML_WARN_BYTES // 1024} KB)",
                where,
                once="size",
            )
        links = hrefs(html)
        for href in links:
            problem = href_problem(href)
            if problem:
                file, line = _href_line(chain, href) or (name, None)
                text = f'broken link href="{href}": {problem}'
                # One line yields other hrefs for other users: report the line once.
                self.add("error", file, line, text, where, once=f"href {line}" if line else "")
        unsubscribe = context["links"]["unsubscribe"]
        if channel == "email" and category == "marketing" and unsubscribe not in links:
            self.add(
                "error",
                name,
                None,
                "marketing email without an unsubscribe link (extend email/_base.html.j2 "
                "and keep its footer, or link to `{{ links.unsubscribe }}`)",
                where,
            )

    def _check_sms(self, file: _File, text: str, where: str) -> None:
        encoding, count = sms_segments(text)
        if count > self.sms_max_segments:
            why = ""
            if encoding == "UCS-2":
                odd = next(c for c in text if c not in GSM_BASIC and c not in GSM_EXTENSION)
                why = f", because of `{odd}`"
            self.add(
                "error",
                file.name,
                None,
                f"the SMS is {count} segments long ({encoding}{why}), more than the "
                f"{self.sms_max_segments} allowed: shorten it",
                where,
                once="sms length",
            )
        if encoding == "UCS-2":
            straight_encoding, straight_count = sms_segments(text.translate(_STRAIGHT_TABLE))
            if straight_encoding == "GSM-7":
                curly = next(c for c in text if c in STRAIGHT)
                line = next(
                    (
                        number
                        for number, content in enumerate(file.source.splitlines(), start=1)
                        if curly in content
                    ),
                    None,
                )
                plain = f"`{STRAIGHT[curly]}`" if STRAIGHT[curly].strip() else "a normal space"
                self.add(
                    "warning",
                    file.name,
                    line,
                    f"the SMS uses `{curly}`, which makes it UCS-2 ({count} segments instead of "
                    f"{straight_count}): use {plain} instead",
                    where,
                    once="sms curly",
                )

    # --- after the renders -------------------------------------------------------------------

    def _check_translations(self, locales: list[str]) -> None:
        for file in self.files.values():
            if (
                file.locale != FALLBACK_LOCALE
                or not file.primary
                or file.partial
                or file.name not in self.used
                or file.channel == "support"  # read by the support team, not the user
            ):
                continue
            for locale in locales:
                if locale == FALLBACK_LOCALE:
                    continue
                own = f"{file.channel}/{file.message}.{file.who}.{locale}.{file.ext}.j2"
                if own in self.files:
                    continue
                shared = f"{file.channel}/{file.message}.{DEFAULT_PERSONA}.{locale}.{file.ext}.j2"
                language = _language(locale)
                if file.who != DEFAULT_PERSONA and shared in self.files:
                    text = (
                        f"no {language} version for persona {file.who}: {language} {file.who} "
                        f"users get the default {language} text (add {own})"
                    )
                else:
                    text = (
                        f"no {language} version: {language} users get the English text (add {own})"
                    )
                self.add("warning", file.name, None, text)

    def _check_unused(self) -> None:
        for file in self.files.values():
            if file.name in self.used:
                continue
            self.add(
                "warning", file.name, None, f"not used by the journey: {self._why_unused(file)}"
            )

    def _why_unused(self, file: _File) -> str:
        if file.partial:
            return "no template extends or includes it"
        if file.channel is None or file.message is None:
            return (
                "its name does not follow <channel>/<message>.<persona|default>.<locale>.<ext>.j2"
            )
        if file.channel not in EXTENSIONS:
            close = difflib.get_close_matches(file.channel, list(EXTENSIONS), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            return f"`{file.channel}` is not a channel folder{hint}"
        known = sorted({message for message, _, _ in self.sends})
        if file.message not in known:
            close = difflib.get_close_matches(file.message, known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            return f"the journey has no message `{file.message}`{hint}"
        who = [*PERSONAS, DEFAULT_PERSONA]
        if file.who not in who:
            close = difflib.get_close_matches(file.who or "", who, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            return f"`{file.who}` is not a persona{hint}"
        if file.locale is not None and not _known_locale(file.locale):
            return f"`{file.locale}` is not a language code"
        if file.ext != EXTENSIONS[file.channel]:
            if file.channel == "email" and file.ext == "txt":
                return "a plain-text version whose .html file is not used"
            return f"{CHANNEL_NAMES[file.channel]} templates are .{EXTENSIONS[file.channel]} files"
        channels = {c for m, c, _ in self.sends if m == file.message}
        if file.channel not in channels:
            return f"the journey does not send `{file.message}` as {CHANNEL_NAMES[file.channel]}"
        personas = sorted({p for m, _, p in self.sends if m == file.message})
        if file.who != DEFAULT_PERSONA and file.who not in personas:
            return f"`{file.message}` is only sent to {', '.join(personas)} users"
        return "every persona has its own version"
