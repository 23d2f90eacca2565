"""Payload encryption: the codec on its own (round trip, rotation, tampering, bad keys), then the
proof that matters: a trial run with encryption leaves no name, email or phone in the history
the Temporal server stores, while a client holding the key reads everything as before."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from trialpath.core.contract import Qualification, TrialProfile, TrialStatus, workflow_id_for
from trialpath.core.journey import TrialInput
from trialpath.operations.codec import (
    ENCODING,
    KEY_ID,
    CodecError,
    CodecKey,
    CodecKeyError,
    EncryptionCodec,
    codec_from_settings,
    keys_from_settings,
    parse_keys,
)
from trialpath.operations.codec_server import CodecServerError, check_exposure, create_codec_app
from trialpath.operations.config import Settings
from trialpath.operations.temporal import DATA_CONVERTER, data_converter
from worker import build_worker
from workflows.trial import TrialWorkflow

pytestmark = pytest.mark.database_agnostic  # its subject is not the database


def key(key_id: str) -> CodecKey:
    return CodecKey(key_id, os.urandom(32))


def entry(k: CodecKey) -> str:
    return f"{k.id}:{base64.b64encode(k.secret).decode()}"


PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email":"ada@example.com"}')


async def test_round_trip_hides_the_data_and_names_the_key() -> None:
    codec = EncryptionCodec([key("k1")])
    [sealed] = await codec.encode([PLAIN])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == b"k1"
    assert b"ada@example.com" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [PLAIN]
    # The same value twice gives two ciphertexts (a fresh nonce each time).
    [again] = await codec.encode([PLAIN])
    assert again.data != sealed.data


async def test_rotation_old_keys_decrypt_the_first_encrypts_a_removed_key_is_named() -> None:
    k1, k2 = key("k1"), key("k2")
    [old] = await EncryptionCodec([k1]).encode([PLAIN])
    rotated = EncryptionCodec([k2, k1])
    assert await rotated.decode([old]) == [PLAIN]
    [new] = await rotated.encode([PLAIN])
    assert new.metadata[KEY_ID] == b"k2"
    only_new = EncryptionCodec([k2])
    assert await only_new.decode([new]) == [PLAIN]
    with pytest.raises(CodecKeyError, match=r"key 'k1', which is not configured.*k2"):
        await only_new.decode([old])


async def test_an_altered_or_relabelled_payload_is_refused() -> None:
    k1, k2 = key("k1"), key("k2")
    codec = EncryptionCodec([k1, k2])
    [sealed] = await codec.encode([PLAIN])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(CodecError, match="failed authentication"):
        await codec.decode([tampered])
    # The key id is authenticated: pointing the payload at another known key fails too.
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID] = b"k2"
    with pytest.raises(CodecError, match="'k2' failed authentication"):
        await codec.decode([relabelled])


async def test_payloads_written_before_encryption_stay_readable() -> None:
    assert await EncryptionCodec([key("k1")]).decode([PLAIN]) == [PLAIN]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("k1", "entry 1 is not `id:base64key`"),
        ("k1:", "entry 1 is not `id:base64key`"),
        ("bad id:" + base64.b64encode(bytes(32)).decode(), "key id 'bad id'"),
        ("k1:not base64!", "key 'k1' is not valid base64"),
        ("k1:" + base64.b64encode(bytes(16)).decode(), "key 'k1' is 16 bytes; AES-256 needs 32"),
        (
            f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}",
            "key id 'k1' appears twice",
        ),
    ],
)
def test_malformed_keys_are_refused_with_a_clear_message(text: str, problem: str) -> None:
    with pytest.raises(CodecKeyError, match=r"^TRIALPATH_CODEC_KEYS: ") as info:
        parse_keys(text)
    assert problem in str(info.value)
    assert base64.b64encode(bytes(32)).decode() not in str(info.value)


def test_keys_from_a_file_lines_comments_and_url_safe_base64(tmp_path: Path) -> None:
    k1, k2 = key("k1"), key("k2")
    path = tmp_path / "codec-keys"
    urlsafe = base64.urlsafe_b64encode(k2.secret).decode()
    path.write_text(f"# newest first\n{entry(k1)}\n{k2.id}:{urlsafe}\n")
    keys = keys_from_settings(Settings(codec_keys_file=path))
    assert keys == [k1, k2]
    assert "secret" not in repr(keys[0]) and k1.secret.hex() not in repr(keys)
    with pytest.raises(CodecKeyError, match="not both"):
        keys_from_settings(Settings(codec_keys=SecretStr(entry(k1)), codec_keys_file=path))
    with pytest.raises(CodecKeyError, match="cannot read"):
        keys_from_settings(Settings(codec_keys_file=tmp_path / "missing"))


def test_without_keys_the_converter_is_the_plain_one() -> None:
    assert data_converter(Settings(codec_keys=SecretStr(""))) is DATA_CONVERTER
    encrypted = data_converter(Settings(codec_keys=SecretStr(entry(key("k1")))))
    assert isinstance(encrypted.payload_codec, EncryptionCodec)
    assert encrypted.payload_converter_class is DATA_CONVERTER.payload_converter_class


async def test_a_trial_with_encryption_leaves_no_personal_data_in_the_server_history(
    env: WorkflowEnvironment, settings: Settings, executor: ThreadPoolExecutor
) -> None:
    settings = settings.model_copy(update={"codec_keys": SecretStr(entry(key("2025-01")))})
    converter = data_converter(settings)
    client = Client(
        env.client.service_client, namespace=env.client.namespace, data_converter=converter
    )
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, settings, executor):
        handle = await start_trial(env, client, settings, user_id)
        status = await first_message_sent(handle)
        assert status.user_id == user_id

        # A client without the key cannot read the query's answer.
        with pytest.raises(Exception, match="binary/encrypted"):
            await env.client.get_workflow_handle(handle.id).query(TrialWorkflow.status)

        # What the server stores, fetched raw: no personal data anywhere in it.
        stored = await raw_history(env, handle.id)
        assert ENCODING in stored
        for secret in (NAME, email_of(user_id), PHONE, "Grace", "navy.example"):
            assert secret.encode() not in stored, f"{secret!r} is readable in the history"

        # The key holder reads the same history in clear.
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        [decoded] = await converter.decode(started.input.payloads, [TrialInput])
        assert decoded.profile.email == email_of(user_id) and decoded.profile.name == NAME

        await end_trial(handle)


async def test_without_encryption_the_same_check_finds_the_personal_data(
    env: WorkflowEnvironment, settings: Settings, executor: ThreadPoolExecutor
) -> None:
    """The control: the search above would have found the data, had it been there."""
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    async with build_worker(env.client, settings, executor):
        handle = await start_trial(env, env.client, settings, user_id)
        await first_message_sent(handle)
        stored = await raw_history(env, handle.id)
        assert ENCODING not in stored
        for secret in (NAME, email_of(user_id), PHONE):
            assert secret.encode() in stored
        await end_trial(handle)


NAME, PHONE = "Grace Brewster Hopper", "+14155550123"


def email_of(user_id: str) -> str:
    return f"grace.{user_id}@navy.example"


async def start_trial(
    env: WorkflowEnvironment, client: Client, settings: Settings, user_id: str
) -> WorkflowHandle[TrialWorkflow, TrialStatus]:
    profile = TrialProfile(
        user_id=user_id,
        name=NAME,
        email=email_of(user_id),
        phone=PHONE,
        signup_at=await env.get_current_time(),
        qualification=Qualification.model_validate({"role": "technical", "urgency": "this_month"}),
    )
    return await client.start_workflow(
        TrialWorkflow.run,
        TrialInput(profile=profile),
        id=workflow_id_for(user_id),
        task_queue=settings.task_queue,
    )


async def first_message_sent(handle: WorkflowHandle[TrialWorkflow, TrialStatus]) -> TrialStatus:
    """The welcome messages go out at signup: activity inputs then carry the address."""
    for _ in range(300):
        status = await handle.query(TrialWorkflow.status)
        if status.sent:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("no message sent at signup")


async def raw_history(env: WorkflowEnvironment, workflow_id: str) -> bytes:
    """The history as the server stores it, fetched by a client that decodes nothing."""
    raw = await env.client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=env.client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    assert len(raw.history.events) > 5
    return raw.history.SerializeToString()


async def end_trial(handle: WorkflowHandle[TrialWorkflow, TrialStatus]) -> None:
    # A trial left running would hold the time-skipping clock once its worker stops.
    await handle.signal("cancel", {})
    await asyncio.wait_for(handle.result(), timeout=30)


# --- codec server ----------------------------------------------------------------------------

UI = "http://127.0.0.1:8233"
STAFF_KEY = "support-key-0123456789"


def codec_server(**changes: object) -> httpx.AsyncClient:
    settings = Settings(
        codec_keys=SecretStr(entry(key("k1"))),
        codec_auth_keys=[STAFF_KEY],
        codec_cors_origin=UI,
    ).model_copy(update=changes)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_codec_app(settings)), base_url="http://codec"
    )


def as_json(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


STAFF = {"Authorization": f"Bearer {STAFF_KEY}", "Content-Type": "application/json"}


async def test_codec_server_decodes_what_it_encoded_under_any_path_prefix() -> None:
    async with codec_server() as server:
        encoded = await server.post("/encode", content=as_json(PLAIN), headers=STAFF)
        assert encoded.status_code == 200
        assert b"ada@example.com" not in encoded.content
        sealed = json_format.Parse(encoded.content, Payloads()).payloads[0]
        assert sealed.metadata["encoding"] == ENCODING
        decoded = await server.post(
            "/namespaces/default/decode", content=encoded.content, headers=STAFF
        )
        assert decoded.status_code == 200
        assert list(json_format.Parse(decoded.content, Payloads()).payloads) == [PLAIN]
        # What the UI sends: base64 metadata and data, camelCase protobuf JSON.
        assert (
            decoded.json()["payloads"][0]["metadata"]["encoding"]
            == base64.b64encode(b"json/plain").decode()
        )


async def test_codec_server_refuses_callers_without_an_accepted_key() -> None:
    async with codec_server() as server:
        body = as_json(PLAIN)
        missing = await server.post("/decode", content=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await server.post("/decode", content=body, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403
        assert b"ada" not in missing.content + wrong.content


async def test_codec_server_accepts_the_key_kept_in_a_cookie_for_the_ui() -> None:
    async with codec_server() as server:
        refused = await server.post("/session", data={"key": "wrong"})
        assert refused.status_code == 403 and "trialpath_codec_key" not in refused.cookies
        accepted = await server.post("/session", data={"key": STAFF_KEY})
        assert accepted.status_code == 200
        cookie = accepted.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        encoded = await server.post("/encode", content=as_json(PLAIN))
        assert encoded.status_code == 200


async def test_codec_server_cors_only_for_the_ui_origin() -> None:
    preflight_headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    async with codec_server() as server:
        ok = await server.options("/decode", headers={"Origin": UI, **preflight_headers})
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == UI
        assert "authorization" in ok.headers["access-control-allow-headers"]
        assert "POST" in ok.headers["access-control-allow-methods"]
        other = await server.options(
            "/decode", headers={"Origin": "https://evil.example", **preflight_headers}
        )
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers

        from_ui = await server.post(
            "/encode", content=as_json(PLAIN), headers={**STAFF, "Origin": UI}
        )
        assert from_ui.headers["access-control-allow-origin"] == UI
        assert from_ui.headers["access-control-allow-credentials"] == "true"
        from_elsewhere = await server.post(
            "/encode", content=as_json(PLAIN), headers={**STAFF, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in from_elsewhere.headers


async def test_codec_server_names_the_missing_key_and_rejects_bad_bodies() -> None:
    [sealed] = await EncryptionCodec([key("retired")]).encode([PLAIN])
    async with codec_server() as server:
        unknown = await server.post("/decode", content=as_json(sealed), headers=STAFF)
        assert unknown.status_code == 422 and "'retired'" in unknown.json()["title"]
        bad = await server.post("/decode", content="not json", headers=STAFF)
        assert bad.status_code == 400


def test_codec_server_without_auth_keys_listens_on_loopback_only() -> None:
    open_settings = Settings(codec_auth_keys=[])
    check_exposure(open_settings, "127.0.0.1")
    with pytest.raises(CodecServerError, match="TRIALPATH_CODEC_AUTH_KEYS is empty"):
        check_exposure(open_settings, "0.0.0.0")
    check_exposure(Settings(codec_auth_keys=[STAFF_KEY]), "0.0.0.0")


def test_codec_server_command_refuses_to_expose_itself_without_keys() -> None:
    from typer.testing import CliRunner

    from trialpath.entry.cli.main import app

    result = CliRunner().invoke(
        app, ["codec-server", "--host", "0.0.0.0"], env={"TRIALPATH_CODEC_AUTH_KEYS": ""}
    )
    assert result.exit_code == 2
    assert "only listens on 127.0.0.1" in result.output
    made = CliRunner().invoke(app, ["codec-server", "--new-key"])
    assert made.exit_code == 0 and len(base64.b64decode(made.output.strip())) == 32


async def test_the_codec_cookie_is_a_session_token_never_the_key() -> None:
    async with codec_server() as server:
        accepted = await server.post("/session", data={"key": STAFF_KEY})
        token = accepted.cookies["trialpath_codec_key"]
        assert STAFF_KEY not in token and STAFF_KEY not in accepted.headers["set-cookie"]
        assert (await server.post("/decode", content=as_json(PLAIN))).status_code == 200
        # A forged or tampered token, or the key itself in the cookie, is refused.
        for forged in (token[:-2] + "xx", STAFF_KEY):
            server.cookies.set("trialpath_codec_key", forged)
            refused = await server.post("/decode", content=as_json(PLAIN))
            assert refused.status_code == 403


async def test_a_codec_session_ends_when_its_key_is_removed() -> None:
    settings = Settings(
        codec_keys=SecretStr(entry(key("k1"))), codec_auth_keys=[STAFF_KEY], codec_cors_origin=UI
    )
    app = create_codec_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://codec"
    ) as server:
        await server.post("/session", data={"key": STAFF_KEY})
        assert (await server.post("/decode", content=as_json(PLAIN))).status_code == 200
        settings.codec_auth_keys.clear()
        settings.codec_auth_keys.append("another-key-0123456789")
        assert (await server.post("/decode", content=as_json(PLAIN))).status_code == 403


async def test_codec_server_bodies_are_bounded() -> None:
    async with codec_server() as server:
        huge = b"{" + b" " * (4 * 1024 * 1024 + 1) + b"}"
        too_big = await server.post("/decode", content=huge, headers=STAFF)
        assert too_big.status_code == 413
        form = await server.post("/session", content=b"key=" + b"k" * 10_000)
        assert form.status_code == 413
        # Unauthenticated callers are refused before their body is read.
        anonymous = await server.post("/decode", content=huge)
        assert anonymous.status_code == 401


async def test_with_keys_unencrypted_payloads_are_refused_unless_allowed() -> None:
    with pytest.raises(CodecError, match="unencrypted payload was refused"):
        await EncryptionCodec([key("k1")], require=True).decode([PLAIN])
    keys = SecretStr(entry(key("k1")))
    required = codec_from_settings(Settings(codec_keys=keys))
    assert required is not None and required.require  # the default once keys are set
    allowed = codec_from_settings(Settings(codec_keys=keys, require_encryption=False))
    assert allowed is not None and await allowed.decode([PLAIN]) == [PLAIN]
    with pytest.raises(CodecKeyError, match="no codec keys"):
        codec_from_settings(Settings(require_encryption=True))


async def test_a_worker_with_keys_does_nothing_for_a_trial_started_without_them(
    env: WorkflowEnvironment, settings: Settings, executor: ThreadPoolExecutor
) -> None:
    """Whoever reaches Temporal without the keys cannot make the worker send mail."""
    from sqlmodel import Session, select
    from temporalio.api.enums.v1 import EventType

    from trialpath.operations.db import make_engine
    from trialpath.operations.models import Message

    settings = settings.model_copy(update={"codec_keys": SecretStr(entry(key("2025-01")))})
    client = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        data_converter=data_converter(settings),
    )
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, settings, executor):
        handle = await start_trial(env, env.client, settings, user_id)  # a plain client
        await asyncio.sleep(3)
        with Session(make_engine(settings.effective_database_url)) as session:
            sent = session.exec(select(Message).where(Message.user_id == user_id)).all()
        assert sent == []
        history = await handle.fetch_history()
        kinds = {EventType.Name(event.event_type) for event in history.events}
        assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" in kinds
        assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" not in kinds
        await handle.terminate("test over")
