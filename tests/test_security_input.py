"""Nothing a caller sends without credentials grows memory or burns CPU out of proportion:
metric labels come from a fixed set, and every pattern over caller text is linear (lengths are
bounded before any pattern runs). Each test fails on the code before these fixes."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from trialpath.core.contract import check_user_id
from trialpath.operations.access import parse_api_keys
from trialpath.operations.config import Settings
from trialpath.operations.logs import MAX_TEXT, redact_text

pytestmark = pytest.mark.database_agnostic  # its subject is not the database

# Sizes that took seconds to minutes before (the time grew with the square of the length):
# each check below must finish far inside LIMIT_S even on a loaded machine.
LIMIT_S = 10.0
ADVERSARIAL = {
    "local part without @": "a" * 262_144,
    "digits": "1" * 262_144,
    "long domain without a dot": "x" * 8_000 + "@" + "b-" * 127_000,
    "bearer and spaces": "bearer" + " " * 262_144,
}


def finishes(call: Any, *args: Any) -> Any:
    """Runs `call(*args)` in a thread and fails (without waiting for it) past LIMIT_S."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call, *args)
    try:
        return future.result(timeout=LIMIT_S)
    except TimeoutError:
        pytest.fail(f"{call.__name__} took over {LIMIT_S} s on {len(args[0])} characters")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_redaction_is_linear_and_bounded(text: str) -> None:
    redacted = finishes(redact_text, text)
    assert len(redacted) < MAX_TEXT + 100
    assert redacted.endswith("characters cut]")


def test_redaction_still_masks_what_it_must() -> None:
    text = "to ada.lovelace+trial@mail.example.co.uk, call +44 20 7946 0958, Bearer abc.def-123"
    assert redact_text(text) == "to [EMAIL], call [PHONE], Bearer [REDACTED]"
    long = "x" * (MAX_TEXT - 30) + " ada@example.com"
    assert "[EMAIL]" in redact_text(long)


@pytest.mark.parametrize("size", [129, 16_384, 1_048_576])
def test_user_id_length_is_checked_before_any_pattern(size: int) -> None:
    user_id = "a@" + "b." * (size // 2)
    with pytest.raises(ValueError, match="1-128 characters long"):
        finishes(check_user_id, user_id[:size])


async def test_metric_labels_do_not_grow_with_odd_methods(settings: Settings) -> None:
    from trialpath.entry.api.app import create_app

    settings = settings.model_copy(
        update={"api_keys": parse_api_keys(["m:admin:metrics-key-0123456789abcdef"])}
    )
    app = create_app(settings, client=object())  # type: ignore[arg-type]
    auth = {"Authorization": "Bearer metrics-key-0123456789abcdef"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as http:
        for i in range(50):
            await http.request(f"PROBE{i}", "/v1/healthz")
        text = (await http.get("/metrics", headers=auth)).text
    methods = set(re.findall(r'trialpath_http_requests_total\{method="([^"]*)"', text))
    assert "PROBE7" not in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert 'method="other",route="/v1/healthz"' in text


async def test_a_long_user_id_in_the_api_is_refused_at_once(settings: Settings) -> None:
    from trialpath.entry.api.app import create_app

    settings = settings.model_copy(
        update={"api_keys": parse_api_keys(["a:admin:api-key-0123456789abcdefgh"])}
    )
    app = create_app(settings, client=object())  # type: ignore[arg-type]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"Authorization": "Bearer api-key-0123456789abcdefgh"},
        ) as http,
    ):
        started = time.monotonic()
        response = await http.post(
            "/v1/trials",
            json={"user_id": "a@" + "b." * 32_000, "email": "a@example.com", "name": "A"},
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 422
    assert elapsed < LIMIT_S, elapsed
