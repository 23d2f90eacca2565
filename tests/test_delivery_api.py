"""The in-app inbox, preferences, one-click unsubscribe links and the providers' webhooks,
through the HTTP API, against the time-skipping server and a real database."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from twilio.request_validator import RequestValidator

from tests.test_api import assert_problem, rows, started
from trialpath.delivery.preferences import UnsubscribeTokens, signing_secret
from trialpath.operations.config import Settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import Message, MessageEvent, Preference, TrialEvent


async def status(api: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/trials/{user_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def message(settings: Settings, user_id: str, channel: str) -> Message:
    """The user's first message on the channel (ordered by key: the database returns rows in
    no particular order)."""
    found = sorted(
        (m for m in rows(settings, Message, user_id) if m.channel == channel), key=lambda m: m.key
    )
    assert found, f"no {channel} message for {user_id}"
    return found[0]


# --- inbox ---------------------------------------------------------------------------------


async def test_inbox_lists_unread_first_and_reading_records_one_event(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "inbox-1")
    page = (await api.get("/v1/users/inbox-1/inbox")).json()
    assert page["unread"] >= 1
    welcome = next(i for i in page["items"] if i["message"] == "welcome")
    assert welcome["unread"] and welcome["title"] and welcome["text"]
    assert welcome["id"].startswith("msg_")
    # The card's button, as its template's front matter names it, leading into the product.
    assert welcome["cta_label"]
    assert welcome["cta_url"].startswith(settings.product_app_url + "/")
    assert "utm_medium=in_app" in welcome["cta_url"]
    assert "utm_campaign=welcome" in welcome["cta_url"]
    (stored,) = [m for m in rows(settings, Message, "inbox-1") if m.step == "welcome/in_app"]
    assert (stored.cta_label, stored.cta_url) == (welcome["cta_label"], welcome["cta_url"])
    # An email's call to action is in its body: its row has no button.
    assert all(
        m.cta_label is None for m in rows(settings, Message, "inbox-1") if m.step.endswith("/email")
    )

    read = await api.post(f"/v1/users/inbox-1/inbox/{welcome['id']}/read")
    assert read.status_code == 200, read.text
    assert read.json()["unread"] is False and read.json()["read_at"]
    again = await api.post(f"/v1/users/inbox-1/inbox/{welcome['id']}/read")
    assert again.json()["read_at"] == read.json()["read_at"]

    after = (await api.get("/v1/users/inbox-1/inbox")).json()
    assert after["unread"] == page["unread"] - 1
    # Unread first: the read message is now after every unread one.
    flags = [i["unread"] for i in after["items"]]
    assert flags == sorted(flags, reverse=True)
    assert all(
        i["unread"] for i in (await api.get("/v1/users/inbox-1/inbox?unread=true")).json()["items"]
    )

    events = [e for e in rows(settings, TrialEvent, "inbox-1") if e.name == "message_read"]
    assert len(events) == 1
    assert events[0].properties == {"message": "welcome", "message_id": welcome["id"]}
    await env.sleep(timedelta(seconds=5))
    assert (await status(api, "inbox-1"))["events_seen"].get("message_read") == 1


async def test_inbox_errors(api: httpx.AsyncClient, env: WorkflowEnvironment) -> None:
    await started(api, env, "inbox-2")
    assert_problem(await api.post("/v1/users/inbox-2/inbox/msg_0000/read"), 404, "msg_0000")
    assert_problem(await api.post("/v1/users/inbox-2/inbox/bad%20id/read"), 422)
    assert_problem(await api.get("/v1/users/inbox-2/inbox?limit=0"), 422, "limit")
    response = await api.get("/v1/users/inbox-2/inbox", headers={"Authorization": ""})
    assert_problem(response, 401)
    # Another user's message id is not found for this user.
    other = (await api.get("/v1/users/inbox-2/inbox")).json()["items"][0]["id"]
    assert_problem(await api.post(f"/v1/users/someone-else/inbox/{other}/read"), 404)


# --- preferences and one-click unsubscribe ---------------------------------------------------


async def test_one_click_unsubscribe_link(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "unsub-1")
    prefs = (await api.get("/v1/users/unsub-1/preferences")).json()
    assert prefs["email"] == {"subscribed": True, "source": None, "updated_at": None}

    token = UnsubscribeTokens(signing_secret(settings)).make("unsub-1", "email")
    page = await api.get(f"/v1/unsubscribe/{token}", headers={"Authorization": ""})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<form method=post" in page.text and "Unsubscribe" in page.text
    # Only showing the page changes nothing (link scanners open links).
    assert (await api.get("/v1/users/unsub-1/preferences")).json()["email"]["subscribed"]

    done = await api.post(
        f"/v1/unsubscribe/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Authorization": "", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200 and "unsubscribed" in done.text
    prefs = (await api.get("/v1/users/unsub-1/preferences")).json()
    assert prefs["email"]["subscribed"] is False and prefs["email"]["source"] == "link"
    assert prefs["sms"]["subscribed"] is True
    await env.sleep(timedelta(seconds=5))
    assert (await status(api, "unsub-1"))["unsubscribed"] == ["email"]
    # A second click is harmless, and repeated POSTs add no signal to the trial's history.
    for _ in range(3):
        assert (
            await api.post(f"/v1/unsubscribe/{token}", headers={"Authorization": ""})
        ).status_code == 200
    history = await env.client.get_workflow_handle("trial-unsub-1").fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals.count("unsubscribe") == 1

    tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    assert_problem(await api.post(f"/v1/unsubscribe/{tampered}"), 404, "not valid")
    assert_problem(await api.get(f"/v1/unsubscribe/{tampered}"), 404, "not valid")
    other_secret = UnsubscribeTokens("another installation").make("unsub-1", "sms")
    assert_problem(await api.post(f"/v1/unsubscribe/{other_secret}"), 404)


async def test_unsubscribe_link_still_works_after_the_trial_ended(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "unsub-2")
    await api.delete("/v1/trials/unsub-2")
    await env.sleep(timedelta(seconds=5))
    token = UnsubscribeTokens(signing_secret(settings)).make("unsub-2", "all")
    assert (await api.post(f"/v1/unsubscribe/{token}")).status_code == 200
    prefs = (await api.get("/v1/users/unsub-2/preferences")).json()
    assert [prefs[c]["subscribed"] for c in ("email", "sms", "in_app")] == [False] * 3


async def test_api_unsubscribe_records_the_preference(
    api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    await started(api, env, "unsub-3")
    assert (
        await api.post("/v1/trials/unsub-3/unsubscribe", json={"channel": "sms"})
    ).status_code == 202
    prefs = (await api.get("/v1/users/unsub-3/preferences")).json()
    assert prefs["sms"]["subscribed"] is False and prefs["sms"]["source"] == "api"


# --- SendGrid Event Webhook ------------------------------------------------------------------


def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A key pair like the one SendGrid shows: the public key as base64 DER."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def signed(
    private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str | None = None
) -> dict[str, str]:
    """Headers SendGrid sends, signed now (or at `timestamp`)."""
    timestamp = timestamp or str(int(time.time()))
    raw = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    signature = base64.b64encode(raw).decode()
    return {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
        "Authorization": "",
    }


async def test_sendgrid_webhook_records_events_and_applies_bounces(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "sg-1")
    sent = message(settings, "sg-1", "email")
    private, public = sendgrid_keys()
    settings.sendgrid_webhook_public_key = public
    events = [
        {
            "email": "sg-1@example.com",
            "timestamp": 1764061200,
            "event": "delivered",
            "sg_event_id": "ev-delivered-1",
            "sg_message_id": "abc123.filter0001.16648.5515E0B88.0",
            "trialpath_key": sent.key,
        },
        {
            "email": "sg-1@example.com",
            "timestamp": 1764061260,
            "event": "bounce",
            "reason": "550 5.1.1 mailbox does not exist",
            "sg_event_id": "ev-bounce-1",
            "sg_message_id": "abc123.filter0001.16648.5515E0B88.0",
            "trialpath_key": sent.key,
        },
        {
            "email": "someone@else.example",
            "timestamp": 1764061260,
            "event": "open",
            "sg_event_id": "ev-foreign",
            "sg_message_id": "zzz.filter",
        },
    ]
    body = json.dumps(events).encode()
    response = await api.post("/v1/webhooks/sendgrid", content=body, headers=signed(private, body))
    assert response.status_code == 200, response.text
    assert response.json() == {"recorded": 3, "duplicates": 0, "unmatched": 1}

    row = message(settings, "sg-1", "email")
    assert row.delivery_status == "bounce"
    prefs = (await api.get("/v1/users/sg-1/preferences")).json()
    assert prefs["email"] == {**prefs["email"], "subscribed": False, "source": "bounce"}
    await env.sleep(timedelta(seconds=5))
    assert (await status(api, "sg-1"))["unsubscribed"] == ["email"]

    # A replay of the same batch changes nothing.
    again = await api.post("/v1/webhooks/sendgrid", content=body, headers=signed(private, body))
    assert again.json() == {"recorded": 0, "duplicates": 3, "unmatched": 0}
    with Session(make_engine(settings.effective_database_url)) as session:
        assert len(session.exec(select(MessageEvent)).all()) == 3


async def test_sendgrid_webhook_refuses_bad_signatures(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    body = json.dumps(
        [{"email": "a@b.c", "timestamp": 1, "event": "spamreport", "sg_event_id": "x1"}]
    ).encode()
    private, public = sendgrid_keys()
    assert_problem(
        await api.post("/v1/webhooks/sendgrid", content=body, headers=signed(private, body)),
        403,
        "not configured",
    )
    settings.sendgrid_webhook_public_key = public
    other, _ = sendgrid_keys()
    for headers in (
        {"Content-Type": "application/json"},
        signed(other, body),
        signed(private, body, timestamp=str(int(time.time()) + 1))
        | {"X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time()))},
        signed(private, body + b" "),
    ):
        response = await api.post(
            "/v1/webhooks/sendgrid", content=body, headers={"Authorization": "", **headers}
        )
        assert_problem(response, 403, "signature")
    # Signed by the right key, but an hour ago: a replay of a captured request.
    old = str(int(time.time()) - 3600)
    replayed = await api.post(
        "/v1/webhooks/sendgrid", content=body, headers=signed(private, body, old)
    )
    assert_problem(replayed, 403, "replay")
    bad = b'{"not": "a list"}'
    assert_problem(
        await api.post("/v1/webhooks/sendgrid", content=bad, headers=signed(private, bad)), 422
    )
    with Session(make_engine(settings.effective_database_url)) as session:
        assert session.exec(select(MessageEvent)).all() == []
        assert session.exec(select(Preference)).all() == []


# --- Twilio webhooks -------------------------------------------------------------------------

TWILIO_TOKEN = "test-auth-token-0123456789abcdef"


def twilio_post(
    settings: Settings, params: dict[str, str], query: str = "", token: str = TWILIO_TOKEN
) -> dict[str, Any]:
    path = "/v1/webhooks/twilio" + (f"?{query}" if query else "")
    signature = RequestValidator(token).compute_signature(
        settings.effective_public_url + path, params
    )
    return {
        "url": path,
        "content": urlencode(params),
        "headers": {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "",
        },
    }


async def test_twilio_status_callbacks_and_stop_replies(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    await started(api, env, "tw-1", phone="+33612345678")
    settings.twilio_auth_token = SecretStr(TWILIO_TOKEN)
    sent = message(settings, "tw-1", "email")
    query = urlencode({"key": sent.key})
    callback = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "To": "+33612345678"}
    response = await api.post(**twilio_post(settings, callback, query))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert message(settings, "tw-1", "email").delivery_status == "delivered"
    # Replayed callbacks are recorded once.
    await api.post(**twilio_post(settings, callback, query))
    with Session(make_engine(settings.effective_database_url)) as session:
        assert len(session.exec(select(MessageEvent)).all()) == 1

    stop = {
        "MessageSid": "SM" + "b" * 32,
        "From": "+33612345678",
        "To": "+15005550006",
        "Body": "Stop",
    }
    assert (await api.post(**twilio_post(settings, stop))).status_code == 200
    prefs = (await api.get("/v1/users/tw-1/preferences")).json()
    assert prefs["sms"]["subscribed"] is False and prefs["sms"]["source"] == "stop"
    await env.sleep(timedelta(seconds=5))
    assert (await status(api, "tw-1"))["unsubscribed"] == ["sms"]


async def test_twilio_webhook_refuses_bad_signatures(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    stop = {"MessageSid": "SM" + "c" * 32, "From": "+33612345678", "Body": "STOP"}
    assert_problem(await api.post(**twilio_post(settings, stop)), 403, "not configured")
    settings.twilio_auth_token = SecretStr(TWILIO_TOKEN)
    forged = twilio_post(settings, stop, token="another-token")
    assert_problem(await api.post(**forged), 403, "signature")
    changed = twilio_post(settings, stop)
    changed["content"] = urlencode({**stop, "Body": "START"})
    assert_problem(await api.post(**changed), 403, "signature")
    missing = twilio_post(settings, stop)
    del missing["headers"]["X-Twilio-Signature"]
    assert_problem(await api.post(**missing), 403)
    with Session(make_engine(settings.effective_database_url)) as session:
        assert session.exec(select(MessageEvent)).all() == []
