"""Who may do what: named keys with roles, refused at start when unusable; the audit log of
every write (API and CLI), pseudonymised by erasure; a conflicting start never echoes data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from trialpath.operations.access import PERMISSIONS, ROLES, parse_api_keys
from trialpath.operations.config import Settings, SettingsError, get_settings
from trialpath.operations.db import make_engine
from trialpath.operations.models import AuditEntry

from .conftest import API_KEY
from .test_api import assert_problem, signup
from .test_cli import address, cli

SECRETS = {role: f"{role}-secret-0123456789abcdefgh" for role in ROLES}


def add_role_keys(settings: Settings) -> None:
    """One key per role, named after it, beside the tests' admin key."""
    settings.api_keys.extend(
        parse_api_keys([f"{role}-key:{role}:{secret}" for role, secret in SECRETS.items()])
    )


def as_role(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[role]}"}


# --- Keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("ci:backend:short-secret", "entry 1 ('ci'): the secret has 12 characters, at least 24"),
        ("ci:backend:", "the secret has 0 characters"),
        ("0123456789abcdefghijklmnopqrstuvwxyz", "entry 1 is not name:role:secret"),
        ("ci:root:0123456789abcdefghijklmnop", "the role must be one of backend, support"),
        (":admin:0123456789abcdefghijklmnop", "entry 1: a name is 1 to 64 letters"),
        (
            "a:admin:0123456789abcdefghijklmnop,a:analyst:abcdefghijklmnop0123456789",
            "entry 2 ('a'): the name is used twice",
        ),
        (
            "a:admin:0123456789abcdefghijklmnop,b:analyst:0123456789abcdefghijklmnop",
            "entry 2 ('b'): the same secret as another key",
        ),
    ],
)
def test_an_unusable_key_is_refused_naming_the_entry_not_the_secret(
    monkeypatch: pytest.MonkeyPatch, value: str, needle: str
) -> None:
    monkeypatch.setenv("TRIALPATH_API_KEYS", value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError) as caught:
            get_settings()
    finally:
        get_settings.cache_clear()
    message = str(caught.value)
    assert message.startswith("invalid settings: TRIALPATH_API_KEYS: ")
    assert needle in message
    for part in value.split(","):
        secret = part.split(":")[-1]
        assert len(secret) < 4 or secret not in message


def test_keys_are_read_as_entries_or_json() -> None:
    text = Settings(
        api_keys="a:admin:0123456789abcdefghijklmnop, b:support:abcdefghijklmnop01234567"
    )
    listed = Settings(api_keys=json.dumps(["a:admin:0123456789abcdefghijklmnop"]))
    objects = Settings(
        api_keys=json.dumps(
            [{"name": "a", "role": "admin", "secret": "0123456789abcdefghijklmnop"}]
        )
    )
    assert [(k.name, k.role) for k in text.api_keys] == [("a", "admin"), ("b", "support")]
    assert listed.api_keys == objects.api_keys == text.api_keys[:1]
    assert "0123456789" not in repr(text) and "0123456789" not in str(text.api_keys)


def test_the_api_refuses_to_start_with_a_short_key(tmp_path: Any) -> None:
    env = {
        **os.environ,
        "TRIALPATH_DATA_DIR": str(tmp_path),
        "TRIALPATH_API_KEYS": "ci:backend:tooshort",
    }
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "trialpath.entry.api.app:create_app",
            "--port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 2, started.stderr
    assert "TRIALPATH_API_KEYS: " in started.stderr and "at least 24" in started.stderr
    assert "Traceback" not in started.stderr and "tooshort" not in started.stderr


def test_keys_new_makes_an_entry_the_settings_accept(tmp_path: Any) -> None:
    trialpath = os.path.join(os.path.dirname(sys.executable), "trialpath")
    env = {**os.environ, "TRIALPATH_DATA_DIR": str(tmp_path), "TRIALPATH_API_KEYS": ""}

    def keys_new(*args: str) -> subprocess.CompletedProcess[str]:
        command = [trialpath, "keys", "new", *args]
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    made = keys_new("crm-sync", "backend")
    assert made.returncode == 0, made.stderr
    (key,) = Settings(api_keys=made.stdout.strip()).api_keys
    assert (key.name, key.role) == ("crm-sync", "backend")
    assert len(key.secret.get_secret_value()) >= 40
    bad = keys_new("crm sync", "root")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# --- Roles -------------------------------------------------------------------------------------

# Each operation, and the permission it needs (trialpath/operations/access.py); requests about a
# user with no trial: a key allowed through gets 404 or 422, never 403.
OPERATIONS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("start", "POST", "/v1/trials", {}),
    ("read", "GET", "/v1/trials", None),
    ("read", "GET", "/v1/trials/nobody", None),
    ("commands", "POST", "/v1/trials/nobody/qualification", {}),
    ("events", "POST", "/v1/trials/nobody/events", {"name": "login"}),
    ("call", "POST", "/v1/trials/nobody/call", {"action": "no_show"}),
    ("extend", "POST", "/v1/trials/nobody/extension", {"days": 3}),
    ("commands", "POST", "/v1/trials/nobody/conversion", {"plan": "team"}),
    ("commands", "POST", "/v1/trials/nobody/unsubscribe", {"channel": "sms"}),
    ("events", "POST", "/v1/trials/nobody/survey", {}),
    ("cancel", "DELETE", "/v1/trials/nobody", None),
    ("erase", "DELETE", "/v1/trials/nobody?erase=true", None),
    ("inbox", "GET", "/v1/users/nobody/inbox", None),
    ("inbox", "GET", "/v1/users/nobody/checklist", None),
    ("inbox", "POST", "/v1/users/nobody/widget-token", None),
    ("read", "GET", "/v1/users/nobody/preferences", None),
    ("kpis", "GET", "/v1/kpis", None),
    ("audit", "GET", "/v1/audit", None),
    ("keys", "GET", "/v1/keys", None),
    ("metrics", "GET", "/metrics", None),
    ("read", "GET", "/v1/agents", None),
    ("agents", "PUT", "/v1/agents/Zoe", {"timezone": "UTC"}),
    ("agents", "DELETE", "/v1/agents/Nobody", None),
]


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_may_do_its_part_only(
    api: httpx.AsyncClient, settings: Settings, role: str
) -> None:
    add_role_keys(settings)
    for permission, method, url, body in OPERATIONS:
        response = await api.request(method, url, json=body, headers=as_role(role))
        if permission in PERMISSIONS[role]:
            assert response.status_code != 403, (role, method, url, response.text)
        else:
            assert_problem(response, 403, f"the key {role}-key ({role}) may not")
    assert "erase" not in PERMISSIONS["support"] and "erase" in PERMISSIONS["admin"]
    assert PERMISSIONS["analyst"] == {"kpis", "metrics"}


async def test_the_key_list_names_roles_never_secrets(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    add_role_keys(settings)
    listed = (await api.get("/v1/keys")).json()["items"]
    assert {(k["name"], k["role"]) for k in listed} >= {(f"{r}-key", r) for r in ROLES}
    text = json.dumps(listed)
    assert API_KEY not in text and not any(secret in text for secret in SECRETS.values())


# --- Audit log ---------------------------------------------------------------------------------


def audit_rows(settings: Settings) -> list[AuditEntry]:
    with Session(make_engine(settings.effective_database_url)) as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)))  # type: ignore[arg-type]


async def test_every_write_is_audited_and_erasure_leaves_a_pseudonym(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    add_role_keys(settings)
    data = signup("audited", phone="+33612345678")
    assert (await api.post("/v1/trials", json=data, headers=as_role("backend"))).status_code == 201
    await env.sleep(timedelta(minutes=1))
    extend = await api.post(
        "/v1/trials/audited/extension", json={"days": 5}, headers=as_role("support")
    )
    assert extend.status_code == 202
    refused = await api.delete(
        "/v1/trials/audited", params={"erase": "true"}, headers=as_role("support")
    )
    assert refused.status_code == 403
    bad = await api.post(
        "/v1/trials/audited/extension", json={"days": 99}, headers=as_role("support")
    )
    assert bad.status_code == 422
    assert (await api.get("/v1/trials/audited", headers=as_role("support"))).status_code == 200

    page = await api.get("/v1/audit", params={"user_id": "audited"}, headers=as_role("support"))
    items = page.json()["items"]
    assert [(i["actor"], i["role"], i["action"], i["status"]) for i in items] == [
        ("support-key", "support", "trial.extend", 422),
        ("support-key", "support", "trial.extend", 202),
        ("backend-key", "backend", "trial.start", 201),
    ]  # newest first; reads are not writes
    # An erasure, even refused, is never logged by user id.
    (refused_entry,) = (await api.get("/v1/audit", params={"action": "trial.erase"})).json()[
        "items"
    ]
    assert (refused_entry["actor"], refused_entry["status"]) == ("support-key", 403)
    assert refused_entry["user_id"].startswith("erased-")

    erased = await api.delete("/v1/trials/audited", params={"erase": "true"})
    assert erased.status_code == 202
    assert erased.json()["erased_rows"]["audit_entries"] == 3
    rows = audit_rows(settings)
    assert rows and not [r for r in rows if r.user_id == "audited"]
    pseudonyms = {r.user_id for r in rows}
    assert len(pseudonyms) == 1 and next(iter(pseudonyms)).startswith("erased-")
    assert rows[-1].action == "trial.erase" and rows[-1].actor == "tests" and rows[-1].status == 202
    stored = " ".join(f"{r.actor} {r.action} {r.user_id} {r.detail}" for r in rows)
    for personal in (data["email"], data["name"], data["phone"], "audited"):
        assert personal not in stored
    # Pages go back in time.
    first = (await api.get("/v1/audit", params={"limit": 2})).json()
    older = (await api.get("/v1/audit", params={"before": first["next_before"]})).json()
    assert [i["id"] for i in first["items"]] + [i["id"] for i in older["items"]] == [
        r.id for r in reversed(rows)
    ]
    assert older["next_before"] is None


@pytest.mark.database_agnostic  # the API's audit code, run on PostgreSQL just above
async def test_cli_writes_are_audited_and_the_cli_reads_the_log(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    assert (await api.post("/v1/trials", json=signup("cli-audit"))).status_code == 201
    await env.sleep(timedelta(minutes=1))
    code, _, err = await cli(settings, "trial", "extend", "cli-audit", "4", address=address(env))
    assert code == 0, err
    code, _, err = await cli(settings, "trial", "extend", "ghost", "4", address=address(env))
    assert code == 1
    code, out, err = await cli(settings, "audit", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["action"], e["user_id"], e["status"]) for e in lines] == [
        ("trial.extend", "ghost", 404),
        ("trial.extend", "cli-audit", 200),
        ("trial.start", "cli-audit", 201),
    ]
    assert lines[0]["actor"].startswith("cli:") and lines[0]["role"] == "cli"
    assert lines[2]["actor"] == "tests"
    code, out, _ = await cli(settings, "audit", "--user", "cli-audit", "--action", "trial.start")
    assert code == 0 and "trial.start" in out and "ghost" not in out
    code, _, err = await cli(settings, "audit", "--limit", "0")
    assert code == 2 and "Traceback" not in err


# --- Conflicts -----------------------------------------------------------------------------------


async def test_a_conflicting_start_names_the_fields_never_the_stored_values(
    api: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    first = signup("conflict", phone="+33612345678", company="Initech")
    assert (await api.post("/v1/trials", json=first)).status_code == 201
    await env.sleep(timedelta(minutes=1))
    other = signup("conflict", email="other@example.org", name="Grace Hopper", phone="+14155550100")
    response = await api.post("/v1/trials", json=other)
    body = assert_problem(response, 409, "email", "name", "phone")
    for value in (first["email"], first["name"], first["phone"], "Initech"):
        assert value not in response.text
    for value in (other["email"], other["name"], other["phone"]):
        assert value not in response.text
    assert set(body) <= {"type", "title", "status", "detail", "instance", "errors"}


# --- Methods -------------------------------------------------------------------------------------


async def test_an_undeclared_method_gets_405_with_allow_and_a_problem(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/openapi.json")).json()
    checked = 0
    for path, operations in document["paths"].items():
        declared = {method.upper() for method in operations}
        url = path
        for name in ("user_id", "message_id", "token"):
            url = url.replace("{" + name + "}", "x1")
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - declared):
            response = await api.request(method, url)
            assert_problem(response, 405)
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert declared <= allowed <= declared | {"HEAD"}, (method, path, allowed)
            checked += 1
    assert checked > 40
