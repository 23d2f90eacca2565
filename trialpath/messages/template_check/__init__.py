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

The checks of each file are in `file_checks`, those of each render in `render_checks` (both on
the shared state of `run`), the findings and the report in `report`; this package runs them in
that order, then looks for missing translations and unused files.

A pure library: it prints nothing (the CLI prints the report).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from babel import Locale, UnknownLocaleError

from trialpath.core.definition import PERSONAS, JourneyDefinition
from trialpath.messages.samples import SAMPLE_USERS, SampleUser
from trialpath.messages.template_check.file_checks import FileChecks
from trialpath.messages.template_check.files import CHANNEL_NAMES, File, known_locale

# The link checks (re-exported: `template_check.href_problem`...).
from trialpath.messages.template_check.links import (
    href_problem as href_problem,
    hrefs as hrefs,
)
from trialpath.messages.template_check.render_checks import RenderChecks

# What the check reports (re-exported: `template_check.Finding`...).
from trialpath.messages.template_check.report import (
    CheckReport as CheckReport,
    Finding as Finding,
    Severity as Severity,
)
from trialpath.messages.templating import DEFAULT_PERSONA, EXTENSIONS, FALLBACK_LOCALE, Product


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


def _language(code: str) -> str:
    try:
        return str(Locale.parse(code).get_display_name("en"))
    except (UnknownLocaleError, ValueError):
        return code


class _Checker(FileChecks, RenderChecks):
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

    def _why_unused(self, file: File) -> str:
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
        if file.locale is not None and not known_locale(file.locale):
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
