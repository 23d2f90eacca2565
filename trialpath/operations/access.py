"""Who may do what: the HTTP API's named keys, their roles, and what each role may do.

    backend   the product's backend: start trials, report events, send commands, read trials
              and in-app inboxes
    support   support staff: read trials and the audit log; work the task queue; call
              outcomes, extensions, cancellations (no erasure); the success-call agents'
              hours and capacity
    analyst   growth: KPIs, the dashboard and metrics, read-only
    admin     everything, erasure (GDPR) and the key list included

Keys are configured as `name:role:secret` entries of TRIALPATH_API_KEYS; a configuration with
an unnamed, unknown-role, short (under 24 characters) or repeated key is refused at start.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, SecretStr

Role = Literal["backend", "support", "admin", "analyst"]
ROLES: tuple[Role, ...] = ("backend", "support", "admin", "analyst")
MIN_API_KEY_LENGTH = 24
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ApiKey(BaseModel):
    """One key of the HTTP API: who holds it (`name`, shown in the audit log), what it may do
    (`role`), and the secret itself (at least 24 characters, never logged nor echoed)."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role
    secret: SecretStr

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"


def parse_api_keys(entries: list[object]) -> list[ApiKey]:
    """`name:role:secret` strings (or `{"name", "role", "secret"}` objects), checked whole:
    every entry named, a known role, a long enough secret, no name or secret twice. The error
    names the entry by its position and name, never by its secret."""
    keys: list[ApiKey] = []
    for number, entry in enumerate(entries, start=1):
        if isinstance(entry, ApiKey):
            fields: dict[str, object] = entry.model_dump()
            fields["secret"] = entry.secret.get_secret_value()
        elif isinstance(entry, dict):
            fields = dict(entry)
        elif isinstance(entry, str):
            parts = entry.strip().split(":", 2)
            if len(parts) != 3:
                raise ValueError(
                    f"entry {number} is not name:role:secret (keys are named and have a role: "
                    "backend, support, admin or analyst; `trialpath keys new` makes one)"
                )
            fields = dict(zip(("name", "role", "secret"), parts, strict=True))
        else:
            raise ValueError(f"entry {number} is not name:role:secret")
        name, role, secret = (str(fields.get(k) or "").strip() for k in ("name", "role", "secret"))
        where = f"entry {number} ({name!r})" if _KEY_NAME.fullmatch(name) else f"entry {number}"
        if not _KEY_NAME.fullmatch(name):
            raise ValueError(f"{where}: a name is 1 to 64 letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise ValueError(f"{where}: the role must be one of {', '.join(ROLES)}")
        if len(secret) < MIN_API_KEY_LENGTH:
            raise ValueError(
                f"{where}: the secret has {len(secret)} characters, at least "
                f"{MIN_API_KEY_LENGTH} are needed (`trialpath keys new` makes one)"
            )
        if any(k.name == name for k in keys):
            raise ValueError(f"{where}: the name is used twice")
        if any(k.secret.get_secret_value() == secret for k in keys):
            raise ValueError(f"{where}: the same secret as another key")
        keys.append(ApiKey(name=name, role=role, secret=SecretStr(secret)))
    return keys


Permission = Literal[
    "start", "events", "commands", "call", "extend", "cancel", "erase",
    "read", "inbox", "kpis", "metrics", "audit", "keys", "tasks", "agents",
]  # fmt: skip

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # The product's backend: what its users do and decide.
    "backend": frozenset(
        {"start", "events", "commands", "call", "extend", "cancel", "read", "inbox"}
    ),
    # Support staff: read trials and the audit log, act on calls, extensions, cancellations.
    "support": frozenset({"read", "call", "extend", "cancel", "audit", "tasks", "agents"}),
    # Growth: numbers only, read-only.
    "analyst": frozenset({"kpis", "metrics"}),
    "admin": frozenset(get_args(Permission)),
}

MAY: dict[Permission, str] = {
    "start": "start trials",
    "events": "report events",
    "commands": "send this command",
    "call": "record call outcomes",
    "extend": "extend trials",
    "cancel": "cancel trials",
    "erase": "erase personal data (admin only)",
    "read": "read trials",
    "inbox": "read or change in-app inboxes",
    "kpis": "read KPIs",
    "metrics": "read metrics",
    "audit": "read the audit log",
    "keys": "list API keys",
    "tasks": "work the support queue (list, claim, snooze, close tasks)",
    "agents": "change success-call agents",
}


def find_key(candidate: str, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The API key whose secret this is; every key is compared (constant time), so timing
    reveals neither the secrets nor which key matched."""
    found = None
    for key in keys:
        if hmac.compare_digest(candidate.encode(), key.secret.get_secret_value().encode()):
            found = key
    return found


def may(key: ApiKey, permission: Permission) -> bool:
    return permission in PERMISSIONS[key.role]
