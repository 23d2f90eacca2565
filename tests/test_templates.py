"""Every message of the journey renders for every persona and locale, strictly."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from trialpath.core.definition import PERSONAS, load_definition
from trialpath.messages.samples import sample_alert
from trialpath.messages.templating import (
    Product,
    Renderer,
    TemplateProblem,
    message_context,
    split_front_matter,
)
from trialpath.operations.config import PACKAGE_DIR, PROJECT_ROOT

DEFN = load_definition(PACKAGE_DIR / "journey.toml")
PRODUCT = Product("Acme", "https://app.acme.test", "1 rue de la Paix, Paris", "help@acme.test")
LOCALES = ("en", "fr")


def journey_messages() -> list[tuple[str, str, str]]:
    """(message, channel, persona) for every send the journey can make."""
    found = []
    for name, spec in DEFN.messages.items():
        channels = set(spec.channels) | ({spec.fallback} if spec.fallback else set())
        for channel in sorted(channels):
            for persona in PERSONAS:
                found.append((name, channel, persona))
    for persona, path in DEFN.personas.items():
        for step in path.drip:
            for channel in step.channels:
                found.append((step.message, channel, persona))
    return found


def context(
    channel: str, message: str, persona: str, locale: str, activated: bool, **user: Any
) -> dict[str, Any]:
    return message_context(
        product=PRODUCT,
        channel=channel,
        message=message,
        user={"name": "Ada Lovelace", "locale": locale, "timezone": "Europe/Paris", **user},
        persona=persona,
        trial={
            "day": 3,
            "days_left": 11,
            "ends_on": date(2026, 12, 9),
            "activated": activated,
            "activation_progress": 50,
            "plan": "team",
        },
        call={
            "at": datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
            "agent": "Camille",
            "duration_minutes": 30,
        },
        alert=sample_alert(message, "u1", persona, "Camille", True)
        or {
            "reason": "stalled",
            "user_id": "u1",
            "persona": persona,
            "urgency": "this_week",
            "days_stalled": 3,
            "cs_task": True,
            "agent": "Camille",
            # An unassigned call's (`call_unassigned`).
            "why": "no agent has a free slot in the window",
            "at": "",
        },
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PROJECT_ROOT / "templates")


@pytest.mark.parametrize("activated", [True, False])
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("message", "channel", "persona"), journey_messages())
def test_every_message_renders(
    renderer: Renderer, message: str, channel: str, persona: str, locale: str, activated: bool
) -> None:
    out = renderer.render(
        channel, message, persona, locale, context(channel, message, persona, locale, activated)
    )
    assert out.text.strip(), "empty text part"
    assert out.category in ("marketing", "transactional")
    assert out.category == DEFN.message(message).category, "front matter disagrees with the journey"
    if channel in ("email", "support"):
        assert out.subject and out.preheader
        assert "<html" in out.html
        # Users are greeted by name; support alerts name the user id instead.
        assert ("u1" if channel == "support" else "Ada") in out.html
        if out.category == "marketing":
            assert "unsubscribe" in out.html
    if channel == "in_app":
        assert out.title
    if channel == "sms":
        # Two concatenated GSM-7 segments at most (2 x 153 characters): links carry UTM tags.
        assert len(out.text) <= 306
    if channel != "support" and locale in out.template:
        assert f".{locale}." in out.template
    assert "{{" not in out.text and "{%" not in out.text


def test_french_user_gets_french_copy(renderer: Renderer) -> None:
    fr = renderer.render(
        "email", "welcome", "business", "fr", context("email", "welcome", "business", "fr", False)
    )
    en = renderer.render(
        "email", "welcome", "business", "en", context("email", "welcome", "business", "en", False)
    )
    assert fr.template == "email/welcome.business.fr.html.j2"
    assert en.template == "email/welcome.business.en.html.j2"
    assert fr.subject != en.subject


def test_fallbacks_persona_then_locale(tmp_path: Path) -> None:
    (tmp_path / "in_app").mkdir()
    (tmp_path / "in_app" / "hello.default.en.txt.j2").write_text(
        "---\ntitle: Hi\n---\nhello {{ persona }}"
    )
    (tmp_path / "in_app" / "hello.technical.en.txt.j2").write_text("---\ntitle: Hi\n---\ntech")
    r = Renderer(tmp_path)
    assert r.resolve("in_app", "hello", "technical", "fr") == "in_app/hello.technical.en.txt.j2"
    assert r.resolve("in_app", "hello", "business", "fr") == "in_app/hello.default.en.txt.j2"
    with pytest.raises(TemplateProblem, match="no template for in_app message 'bye'"):
        r.resolve("in_app", "bye", "business", "en")


def test_undefined_variable_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "oops.default.en.txt.j2").write_text(
        "---\ncategory: marketing\n---\n\nHi {{ user.nickname }}"
    )
    r = Renderer(tmp_path)
    with pytest.raises(TemplateProblem, match=r"sms/oops.default.en.txt.j2:5: .*nickname"):
        r.render("sms", "oops", None, "en", context("sms", "oops", "business", "en", False))


def test_user_data_is_escaped_in_html(renderer: Renderer) -> None:
    ctx = context("email", "welcome", "technical", "en", False, company="<script>x()</script>")
    ctx["user"]["first_name"] = "<b>Eve</b>"
    out = renderer.render("email", "welcome", "technical", "en", ctx)
    assert "<b>Eve</b>" not in out.html
    assert "&lt;b&gt;Eve&lt;/b&gt;" in out.html
    assert "<script>" not in out.html


def test_edits_apply_on_next_render_and_change_the_hash(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    path = tmp_path / "sms" / "note.default.en.txt.j2"
    path.write_text("---\ncategory: transactional\n---\nfirst")
    r = Renderer(tmp_path)
    ctx = context("sms", "note", "business", "en", False)
    first = r.render("sms", "note", None, "en", ctx)
    path.write_text("---\ncategory: transactional\n---\nsecond version")
    import os

    os.utime(path, (path.stat().st_atime + 5, path.stat().st_mtime + 5))
    second = r.render("sms", "note", None, "en", ctx)
    assert (first.text, second.text) == ("first", "second version")
    assert first.content_hash != second.content_hash


def test_front_matter_split_keeps_line_numbers() -> None:
    meta, body, skipped = split_front_matter("---\nsubject: Hi\ncategory: marketing\n---\nbody\n")
    assert meta == {"subject": "Hi", "category": "marketing"}
    assert body == "body\n"
    assert skipped == 4
    with pytest.raises(TemplateProblem, match="never closed"):
        split_front_matter("---\nsubject: Hi\n")


def test_links_carry_utm_parameters() -> None:
    ctx = context("email", "welcome", "technical", "en", False)
    assert ctx["link"]("/docs/quickstart") == (
        "https://app.acme.test/docs/quickstart?utm_source=trialpath&utm_medium=email&utm_campaign=welcome"
    )
    assert ctx["call"]["at"] == "Friday 27 November at 10:00 (Europe/Paris)"
    fr = context("email", "welcome", "technical", "fr", False)
    assert fr["call"]["at"] == "vendredi 27 novembre à 10:00 (Europe/Paris)"
    assert fr["trial"]["ends_on"] == "9 décembre 2026"


def test_email_css_is_inlined_for_clients_that_drop_style_blocks(renderer: Renderer) -> None:
    ctx = context("email", "welcome", "technical", "en", False)
    html = renderer.render("email", "welcome", "technical", "en", ctx).html
    card = re.search(r'<div class="card"[^>]*>', html)
    assert card is not None and "background: #ffffff" in card.group(0)
    cta = re.search(r'<a [^>]*class="cta"[^>]*>', html)
    assert cta is not None and "background: #3b4cca" in cta.group(0)
    assert "<style>" in html  # kept for clients that read it


def test_any_error_in_a_template_is_a_template_problem_with_file_and_line(
    tmp_path: Path,
) -> None:
    """So the worker treats it as a broken template (alert, retry later), never as a crash."""
    (tmp_path / "sms").mkdir()
    (tmp_path / "email").mkdir()
    (tmp_path / "sms" / "a.default.en.txt.j2").write_text(
        '---\ncategory: marketing\n---\nHi\n{{ trial.days_left + "x" }}\n'
    )
    (tmp_path / "sms" / "b.default.en.txt.j2").write_text("---\nsubject: [oops\n---\nHi\n")
    (tmp_path / "email" / "_base.html.j2").write_text(
        "<p>{{ product.nam }}</p>\n{% block body %}{% endblock %}\n"
    )
    (tmp_path / "email" / "c.default.en.html.j2").write_text(
        '---\nsubject: Hi\n---\n{% extends "email/_base.html.j2" %}\n'
        "{% block body %}x{% endblock %}\n"
    )
    renderer = Renderer(tmp_path)
    ctx = context("sms", "a", "technical", "en", False)
    with pytest.raises(TemplateProblem, match=r"^sms/a\.default\.en\.txt\.j2:5: "):
        renderer.render("sms", "a", "technical", "en", ctx)
    with pytest.raises(TemplateProblem, match=r"^sms/b\.default\.en\.txt\.j2:\d: invalid front"):
        renderer.render("sms", "b", "technical", "en", ctx)
    # The error is in the base layout: that is the file named.
    with pytest.raises(TemplateProblem, match=r"^email/_base\.html\.j2:1: .*nam"):
        renderer.render(
            "email", "c", "technical", "en", context("email", "c", "technical", "en", False)
        )


INJECTIONS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ link.__globals__['os'] }}",
    "{{ user.__class__.__init__.__globals__ }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_user_data_is_text_never_template_code(
    renderer: Renderer, tmp_path: Path, payload: str
) -> None:
    """A user who signs up with template code as their name or company gets it back as text
    (escaped in HTML), never evaluated."""
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "x.default.en.txt.j2").write_text(
        "---\ncategory: marketing\n---\nHi {{ user.first_name }} from {{ user.company }}\n"
    )
    ctx = context("sms", "x", "technical", "en", False, name=payload, company=payload)
    ctx["user"]["first_name"] = payload
    text = Renderer(tmp_path).render("sms", "x", "technical", "en", ctx).text
    assert text == f"Hi {payload} from {payload}"
    email_ctx = context("email", "welcome", "technical", "en", False, company=payload)
    email_ctx["user"]["first_name"] = payload
    html = renderer.render("email", "welcome", "technical", "en", email_ctx).html
    assert "<class " not in html and "uid=" not in html
    assert payload in unescape(html)  # shown (escaped) as the text it is


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize("where", ["body", "subject"])
def test_template_code_cannot_escape_the_sandbox(tmp_path: Path, payload: str, where: str) -> None:
    """Even a template (or its front matter) written to break out is stopped by the sandbox,
    and reported as a broken template."""
    (tmp_path / "sms").mkdir()
    subject = payload.replace('"', "'") if where == "subject" else "Hi"
    body = payload if where == "body" else "Hi"
    (tmp_path / "sms" / "x.default.en.txt.j2").write_text(
        f'---\nsubject: "{subject}"\ncategory: marketing\n---\n{body}\n'
    )
    ctx = context("sms", "x", "technical", "en", False)
    with pytest.raises(TemplateProblem) as info:
        Renderer(tmp_path).render("sms", "x", "technical", "en", ctx)
    assert (
        "unsafe" in str(info.value)
        or "not safely" in str(info.value)
        or "undefined" in str(info.value)
    )


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "Ends December 9, 2026 · call Friday, November 27, 2026 · 10:00\u202fAM · 1,234.5"),
        ("fr", "Ends 9 décembre 2026 · call vendredi 27 novembre 2026 · 10:00 · 1\u202f234,5"),
    ],
)
def test_filters_format_in_the_users_language_and_time_zone(
    tmp_path: Path, locale: str, expected: str
) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / f"x.default.{locale}.txt.j2").write_text(
        "---\ncategory: transactional\n---\n"
        "Ends {{ trial.ends_on_date | date }} · call {{ call.starts_at | date('full') }} · "
        "{{ call.starts_at | time }} · {{ 1234.5 | number }}\n"
    )
    ctx = context("sms", "x", "technical", locale, False)  # call at 09:00 UTC, Paris time
    text = Renderer(tmp_path).render("sms", "x", "technical", locale, ctx).text
    assert text == expected


@pytest.mark.parametrize(("locale", "who"), [("en", "our team"), ("fr", "notre équipe")])
def test_a_call_no_agent_has_yet_is_with_the_team(
    renderer: Renderer, locale: str, who: str
) -> None:
    """The user booked a time when no agent was free: the confirmation names the team, never
    an empty name."""
    product = Product("Acme", "https://app.acme.test", "1 rue de la Paix", "help@acme.test")
    context = message_context(
        product=product,
        channel="email",
        message="call_booked",
        user={"name": "Ada Lovelace", "locale": locale, "timezone": "Europe/Paris"},
        persona="business",
        trial={"day": 1, "days_left": 13, "ends_on": date(2026, 12, 9)},
        call={"at": datetime(2026, 11, 27, 14, 0, tzinfo=UTC), "agent": None},
    )
    assert context["call"]["agent"] == who
    out = renderer.render("email", "call_booked", "business", locale, context)
    assert who in out.text and "with ," not in out.text and "avec ," not in out.text
