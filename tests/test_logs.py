"""Logs: one JSON object a line, ids kept, personal data and secrets masked wherever they are
(the message, extra fields, nested values, exceptions), for stdlib and structlog loggers alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from trialpath.operations.logs import bind_activity, configure_logging, redact_text

EMAIL = "ada.lovelace@example.com"
PHONE = "+33 6 12 34 56 78"
TOKEN = "sk_live_0123456789abcdef"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    # ActivityEnvironment runs activities in the caller's context: earlier tests' bindings stay.
    structlog.contextvars.clear_contextvars()
    handler = configure_logging("json", "INFO", stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        activity.logger.activity_info_on_message = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_clean(text: str) -> None:
    for secret in (EMAIL, "ada.lovelace", PHONE, "+33612345678", TOKEN, "Ada Lovelace"):
        assert secret not in text, f"{secret!r} leaked: {text}"


def test_pii_in_the_message_extra_fields_and_exception_is_masked_ids_stay(
    output: io.StringIO,
) -> None:
    log = logging.getLogger("trialpath.test")
    log.info(
        "sending welcome to %s (sms %s) at 2025-03-01T09:00:00+01:00",
        EMAIL,
        PHONE,
        extra={
            "workflow_id": "trial-u-42",
            "step": "welcome/email",
            "email": EMAIL,
            "full_name": "Ada Lovelace",
            "request": {"headers": {"Authorization": f"Bearer {TOKEN}"}, "to": [EMAIL]},
            "api_key": TOKEN,
        },
    )
    try:
        raise RuntimeError(f"provider refused {EMAIL}: Authorization: Bearer {TOKEN}")
    except RuntimeError:
        log.exception("send failed for user %s", "u-42", extra={"workflow_id": "trial-u-42"})

    text = output.getvalue()
    assert_clean(text)
    first, second = lines(output)
    assert first["event"] == "sending welcome to [EMAIL] (sms [PHONE]) at 2025-03-01T09:00:00+01:00"
    assert first["workflow_id"] == "trial-u-42" and first["user_id"] == "u-42"
    assert first["step"] == "welcome/email"
    assert first["email"] == first["full_name"] == first["api_key"] == "[REDACTED]"
    assert first["request"] == {"headers": {"Authorization": "[REDACTED]"}, "to": ["[EMAIL]"]}
    assert first["level"] == "info" and first["logger"] == "trialpath.test"
    assert second["event"] == "send failed for user u-42"
    assert "RuntimeError: provider refused [EMAIL]" in second["exception"]
    assert "Bearer [REDACTED]" in second["exception"]
    assert second["user_id"] == "u-42"


def test_structlog_loggers_and_bound_context_go_the_same_way(output: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(user_id="u-7", step="nudge/sms")
    structlog.get_logger("trialpath.api").warning(
        "unsubscribe link used", phone=PHONE, link="https://x.example/v1/unsubscribe/abc.def.ghi"
    )
    [line] = lines(output)
    assert line["user_id"] == "u-7" and line["step"] == "nudge/sms"
    assert line["phone"] == "[REDACTED]"
    assert line["link"] == "https://x.example/v1/unsubscribe/[REDACTED]"


def test_an_activity_binds_its_ids_to_every_line(output: io.StringIO) -> None:
    @activity.defn(name="send_message")
    def send(user_id: str) -> None:
        bind_activity(user_id=user_id, step="welcome/email")
        logging.getLogger("trialpath.delivery").info("handing over to %s", EMAIL)
        activity.logger.info("sent")

    ActivityEnvironment().run(send, "u-9")
    plain, sdk = lines(output)
    for line in (plain, sdk):
        assert line["workflow_id"] == "test"  # ActivityEnvironment's default info
        assert line["user_id"] == "u-9" and line["step"] == "welcome/email"
        assert line["activity"] == "unknown"  # ActivityEnvironment's default too
    assert plain["event"] == "handing over to [EMAIL]"
    # In JSON the ids are fields: the SDK logger no longer appends them to the message.
    assert sdk["event"] == "sent"


def test_console_format_is_redacted_too() -> None:
    stream = io.StringIO()
    handler = configure_logging("console", "INFO", stream)
    try:
        logging.getLogger("trialpath.test").warning("mail %s", EMAIL, extra={"token": TOKEN})
    finally:
        logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
    assert_clean(stream.getvalue())
    assert "[EMAIL]" in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +14155552671 now", "call [PHONE] now"),
        ("call +1 (415) 555-2671", "call [PHONE]"),
        ("at 2025-03-01T09:00:00+01:00 for 12345678 cents", None),
        ("order +12 items", None),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
        ("to Ada.L+trial@mail.example.co.uk", "to [EMAIL]"),
    ],
)
def test_patterns(text: str, expected: str | None) -> None:
    assert redact_text(text) == (expected if expected is not None else text)
