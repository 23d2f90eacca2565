"""Structured logs: JSON (or readable console lines) with the trial's ids bound, and personal
data masked before anything is written.

Everything goes through the standard `logging` module, so the SDK's loggers, uvicorn's and our
own `logging.getLogger(...)` calls come out the same way as `structlog.get_logger()` ones.
Context bound with `structlog.contextvars` (see `bind_activity`) is added to every line logged
in that context, whichever logger logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio import activity

from trialpath.operations.config import Settings

Format = Literal["json", "console"]

# --- redaction -------------------------------------------------------------------------------

# Linear in the text's length: a match starts only where the local part starts (not inside a
# run of its characters) and nothing backtracks (possessive), so a long line without `@` or a
# long domain costs one pass, not one pass per character.
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)+")
# E.164-ish: a +, then 7 to 15 digits, maybe grouped by spaces, dots, dashes or parentheses.
PHONE = re.compile(r"(?<![\w+])\+[1-9](?:[\s.()-]{0,2}\d){6,14}\b")
BEARER = re.compile(r"(?i)\b(bearer|basic)\s++[A-Za-z0-9._~+/=-]{6,}")
# Signed links: unsubscribe and survey tokens let whoever holds them act for the user.
SIGNED_LINK = re.compile(r"(/v1/(?:unsubscribe|surveys)/)[^\s/?\"']+")
SENSITIVE_KEY_PARTS = (
    "email",
    "phone",
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "recipient",
)
SENSITIVE_KEYS = frozenset(
    {"name", "first_name", "last_name", "full_name", "display_name", "username", "user_name"}
)
REDACTED = "[REDACTED]"


def sensitive_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    normalized = key.lower().replace("-", "_")
    return normalized in SENSITIVE_KEYS or any(p in normalized for p in SENSITIVE_KEY_PARTS)


MAX_TEXT = 32_768
"""Longer strings are cut before any pattern runs on them (and marked so)."""


def redact_text(text: str) -> str:
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}…[{len(text) - MAX_TEXT} more characters cut]"
    text = BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = SIGNED_LINK.sub(rf"\g<1>{REDACTED}", text)
    text = EMAIL.sub("[EMAIL]", text)
    return PHONE.sub("[PHONE]", text)


def redact_value(value: Any, key: object = None) -> Any:
    """Masks the whole value of a sensitive key, and emails, phone numbers and bearer tokens
    inside any string, at any depth."""
    if sensitive_key(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    # Objects are rendered with repr() by the JSON renderer: redact that text instead.
    return redact_text(repr(value))


UNREDACTED_KEYS = frozenset({"timestamp", "level", "logger"})


def redact(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The structlog processor: runs last before rendering, after exceptions became text.
    The message (`event`) is masked by pattern only: its key is no reason to hide it."""
    masked: EventDict = {}
    for key, value in event_dict.items():
        if key in UNREDACTED_KEYS:
            masked[key] = value
        else:
            masked[key] = redact_value(value, None if key == "event" else key)
    return masked


# --- context ---------------------------------------------------------------------------------


def lift_temporal_ids(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The SDK's activity and workflow loggers put their details in one nested `extra`;
    the ids go to the top level, where log queries expect them."""
    for nested in ("temporal_activity", "temporal_workflow"):
        details = event_dict.pop(nested, None)
        if not isinstance(details, Mapping):
            continue
        for source, target in (
            ("workflow_id", "workflow_id"),
            ("run_id", "run_id"),
            ("workflow_run_id", "run_id"),
            ("activity_type", "activity"),
            ("attempt", "attempt"),
        ):
            if details.get(source) is not None:
                event_dict.setdefault(target, details[source])
    # Core log lines forwarded by the SDK carry their raw form, uvicorn's lines an ANSI-coloured
    # copy: the message says it all.
    event_dict.pop("temporal_log", None)
    event_dict.pop("color_message", None)
    workflow_id = event_dict.get("workflow_id")
    if isinstance(workflow_id, str) and workflow_id.startswith("trial-"):
        event_dict.setdefault("user_id", workflow_id.removeprefix("trial-"))
    return event_dict


def bind_activity(**fields: Any) -> None:
    """Binds the running activity's ids (and `fields`, e.g. `user_id`, `step`) to every log line
    for the rest of the activity. The SDK runs each activity in a copy of the context, so
    nothing leaks into the next activity on the same thread."""
    if activity.in_activity():
        info = activity.info()
        fields = {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "activity": info.activity_type,
            "attempt": info.attempt,
            **fields,
        }
    structlog.contextvars.bind_contextvars(**fields)


# --- configuration ---------------------------------------------------------------------------


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure_logging` installed, so a second call replaces it and
    leaves any other handler (pytest's, an embedding application's) alone."""


def _renderer(fmt: Format) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(default=repr)
    return structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback
    )


def configure_logging(
    fmt: Format = "console", level: str | int = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Routes the standard `logging` module (and so structlog) through one redacting
    handler on `stream` (stderr by default). Returns that handler."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            lift_temporal_ids,
            structlog.processors.format_exc_info,
            redact,
            _renderer(fmt),
        ],
    )
    handler = _OwnHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OwnHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # uvicorn installs handlers of its own: its lines go through ours instead. A logger it
    # silenced (no handler, no propagation: `--no-access-log`) stays silent.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        if server_logger.handlers:
            server_logger.handlers.clear()
            server_logger.propagate = True
    if fmt == "json":
        # The ids are fields of the line: no need to repeat them in the message.
        activity.logger.activity_info_on_message = False
    return handler


def configure_from_settings(settings: Settings) -> logging.Handler:
    return configure_logging(settings.log_format, settings.log_level)
