"""The check of each render: every message the journey sends, for every persona, language and
sample user, rendered as the worker does; then undefined variables, empty subject or title,
broken links, the unsubscribe link of marketing email, HTML size and SMS segments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError, UndefinedError

from trialpath.delivery.twilio import GSM_BASIC, GSM_EXTENSION, sms_segments
from trialpath.messages.samples import SampleUser, sample_context
from trialpath.messages.template_check.files import (
    CHANNEL_NAMES,
    FRONT_MATTER_KEYS,
    REQUIRED_KEYS,
    TEXT_KEYS,
    File,
)
from trialpath.messages.template_check.jinja import (
    UNDEFINED_ATTR,
    UNDEFINED_NAME,
    path_on_line,
    path_problem,
    template_frame,
)
from trialpath.messages.template_check.links import href_line, href_problem, hrefs
from trialpath.messages.template_check.run import CheckRun
from trialpath.messages.templating import (
    DEFAULT_PERSONA,
    EXTENSIONS,
    FALLBACK_LOCALE,
    TemplateProblem,
)

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


class RenderChecks(CheckRun):
    """Renders every send of the journey and checks what comes out."""

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

    def _chain(self, name: str) -> list[File]:
        """The file, its plain-text twin, and every file they extend or include."""
        names = [name]
        if name.endswith(".html.j2"):
            twin = name.removesuffix(".html.j2") + ".txt.j2"
            if twin in self.files:
                names.append(twin)
        chain: list[File] = []
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
        chain: list[File],
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
                problem = path_problem(self.text_env.from_string(cta_path).render(context))
                if problem:
                    line = chain[0].meta_lines.get("cta_path")
                    self.add("error", name, line, f"`cta_path`: {problem}", where)
        elif channel == "sms":
            self._check_sms(chain[0], out.text, where)

    def _render_error(self, name: str, err: BaseException, where: str) -> None:
        frame = template_frame(err, self.root)
        if isinstance(err, UndefinedError):
            text = err.message or ""
            missing = UNDEFINED_NAME.match(text)
            attribute = UNDEFINED_ATTR.search(text)
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
                path = path_on_line(text_line, token, missing is None)
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
        chain: list[File],
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
                file, line = href_line(chain, href) or (name, None)
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

    def _check_sms(self, file: File, text: str, where: str) -> None:
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
