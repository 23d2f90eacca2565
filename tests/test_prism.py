"""The contract-mock harness: Prism must turn spec violations into errors, or the provider
contract tests built on it would prove nothing."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.prism
from tests.prism import (
    SENDGRID_SPEC,
    SPECS_DIR,
    PrismError,
    prism_mock,
    require_prism,
    sendgrid_mock,  # noqa: F401
    twilio_mock,  # noqa: F401
    violations,
)

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


def mail_send_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "ada@example.com"}]}],
        "from": {"email": "onboarding@acme.example", "name": "Acme"},
        "subject": "Welcome to Acme",
        "content": [
            {"type": "text/plain", "value": "Welcome"},
            {"type": "text/html", "value": "<p>Welcome</p>"},
        ],
    }
    body.update(overrides)
    return body


@pytest.fixture(scope="module")
def sendgrid(sendgrid_mock: str) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(
        base_url=sendgrid_mock, headers={"Authorization": "Bearer x"}, timeout=10
    ) as client:
        yield client


@pytest.fixture(scope="module")
def twilio(twilio_mock: str) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=twilio_mock, auth=(ACCOUNT_SID, "token"), timeout=10) as client:
        yield client


def refuses_connections(url: str) -> bool:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    assert port is not None
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# SendGrid Mail Send: the spec documents a 400, so Prism answers 400 with the spec's example
# body and lists the violations in the `sl-violations` header.


def test_sendgrid_accepts_a_valid_mail_send(sendgrid: httpx.Client) -> None:
    response = sendgrid.post("/v3/mail/send", json=mail_send_body())

    assert response.status_code == 202
    assert "sl-violations" not in response.headers
    assert violations(response) == []


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        pytest.param(
            {"personalizations": None},
            ["request", "body"],
            "Request body must have required property 'personalizations'",
            id="no-personalizations",
        ),
        pytest.param(
            {"from": {"name": "Acme"}},
            ["request", "body", "from"],
            "Request body property from must have required property 'email'",
            id="from-without-email",
        ),
    ],
)
def test_sendgrid_reports_a_broken_mail_send(
    sendgrid: httpx.Client, body: dict[str, Any], location: list[str], message: str
) -> None:
    payload = {k: v for k, v in mail_send_body(**body).items() if v is not None}

    response = sendgrid.post("/v3/mail/send", json=payload)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"errors": [{"field": "field_name", "message": "error message"}]}
    assert json.loads(response.headers["sl-violations"]) == [
        {"location": location, "severity": "Error", "code": "required", "message": message}
    ]
    assert violations(response) == json.loads(response.headers["sl-violations"])


def test_sendgrid_requires_the_bearer_key(sendgrid_mock: str) -> None:  # noqa: F811
    response = httpx.post(f"{sendgrid_mock}/v3/mail/send", json=mail_send_body(), timeout=10)

    assert response.status_code == 401
    assert violations(response)[0]["message"] == "Invalid security scheme used"


# Twilio Messages: no error response in the spec, so Prism makes its own 422 problem document,
# violations in its `validation` list and no `sl-violations` header.


def test_twilio_creates_a_message(twilio: httpx.Client) -> None:
    response = twilio.post(
        MESSAGES, data={"To": "+15558675310", "From": "+15017122661", "Body": "Welcome"}
    )

    assert response.status_code == 201
    assert violations(response) == []
    message = response.json()
    assert message["sid"].startswith("SM")
    assert message["status"] == "queued"


def test_twilio_reports_a_missing_to(twilio: httpx.Client) -> None:
    response = twilio.post(MESSAGES, data={"From": "+15017122661", "Body": "Welcome"})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "sl-violations" not in response.headers
    problem = response.json()
    assert problem["type"] == "https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY"
    assert violations(response) == [
        {
            "location": ["body"],
            "severity": "Error",
            "code": "required",
            "message": "Request body must have required property 'To'",
        }
    ]


def test_twilio_reports_a_malformed_account_sid(twilio: httpx.Client) -> None:
    response = twilio.post(
        "/2010-04-01/Accounts/ACnot-a-sid/Messages.json",
        data={"To": "+15558675310", "From": "+15017122661", "Body": "Welcome"},
    )

    assert response.status_code == 422
    assert {v["code"] for v in violations(response)} >= {"pattern"}


def test_twilio_requires_basic_auth(twilio_mock: str) -> None:  # noqa: F811
    response = httpx.post(
        f"{twilio_mock}{MESSAGES}",
        data={"To": "+15558675310", "From": "+15017122661", "Body": "Welcome"},
        timeout=10,
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="*"'


# The harness itself.


def test_prism_is_stopped_when_the_block_fails() -> None:
    require_prism(SENDGRID_SPEC)

    served: list[str] = []

    def fail_while_serving() -> None:
        with prism_mock(SPECS_DIR / SENDGRID_SPEC) as url:
            served.append(url)
            assert not refuses_connections(url)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_while_serving()

    assert refuses_connections(served[0])


def test_prism_failing_to_start_reports_its_output(tmp_path: Path) -> None:
    require_prism()
    spec = tmp_path / "empty.json"
    spec.write_text('{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {}}')

    with pytest.raises(PrismError, match="No operations found"), prism_mock(spec):
        pytest.fail("prism should not have started")


def test_prism_refuses_a_port_in_use() -> None:
    require_prism(SENDGRID_SPEC)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]

        with (
            pytest.raises(PrismError, match="already in use"),
            prism_mock(SPECS_DIR / SENDGRID_SPEC, port=port),
        ):
            pytest.fail("prism should not have started")


def test_require_prism_skips_without_specs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tests.prism, "PRISM", Path(__file__))  # present
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(tests.prism, "SPECS_DIR", tmp_path / "absent")

    with pytest.raises(pytest.skip.Exception, match="no provider specs at"):
        require_prism(SENDGRID_SPEC)

    assert "no provider specs at" in capsys.readouterr().err


def test_require_prism_skips_without_prism(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tests.prism, "PRISM", tmp_path / "node_modules" / ".bin" / "prism")
    monkeypatch.setattr(tests.prism, "REPO_ROOT", tmp_path)

    with pytest.raises(pytest.skip.Exception, match=r"node_modules/\.bin/prism is not installed"):
        require_prism()


def test_violations_without_any() -> None:
    assert violations(httpx.Response(202)) == []
    assert violations(httpx.Response(400, json={"errors": []})) == []
