"""`trialpath keys`: the HTTP API's keys (TRIALPATH_API_KEYS)."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer
from rich.table import Table

from trialpath.entry.cli.common import console, err_console, fail
from trialpath.operations.access import PERMISSIONS, Role, parse_api_keys
from trialpath.operations.config import SettingsError, get_settings

keys_app = typer.Typer(help="API keys (TRIALPATH_API_KEYS).", no_args_is_help=True)


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="Who holds it, as the audit log shows it.")],
    role: Annotated[Role, typer.Argument(help="backend, support, admin or analyst")],
) -> None:
    """Make a key: prints the `name:role:secret` entry to add to TRIALPATH_API_KEYS."""
    secret = secrets.token_urlsafe(32)
    try:
        (key,) = parse_api_keys([f"{name}:{role}:{secret}"])
    except ValueError as err:
        raise fail(str(err).replace("entry 1", "the key"), 2) from err
    others = get_settings().api_keys if _settings_usable() else []
    if any(k.name == key.name for k in others):
        raise fail(f"a key named {key.name} is already in TRIALPATH_API_KEYS", 2)
    sys.stdout.write(f"{key.name}:{key.role}:{secret}\n")
    err_console.print(
        "Add this entry to TRIALPATH_API_KEYS (comma-separated) and restart the API; "
        "the secret is shown only now."
    )


@keys_app.command("list")
def keys_list() -> None:
    """The configured keys: names and roles, never the secrets."""
    keys = get_settings().api_keys
    if not keys:
        console.print("No API keys: TRIALPATH_API_KEYS is empty (`up` makes a local one).")
        return
    table = Table(title=f"API keys ({len(keys)})", title_justify="left")
    for column in ("name", "role", "may"):
        table.add_column(column)
    for key in keys:
        table.add_row(key.name, key.role, ", ".join(sorted(PERMISSIONS[key.role])))
    console.print(table)


def _settings_usable() -> bool:
    try:
        get_settings()
    except SettingsError:
        return False
    return True
