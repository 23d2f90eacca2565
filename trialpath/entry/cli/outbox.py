"""`trialpath outbox`: the messages the journey has sent (the outbox)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import Session, col, select

from trialpath.entry.cli.common import console
from trialpath.operations.config import get_settings
from trialpath.operations.db import engine_for
from trialpath.operations.models import Message

outbox_app = typer.Typer(help="Messages the journey has sent (the outbox).", no_args_is_help=True)


# --- outbox ----------------------------------------------------------------------------------


@outbox_app.command("list")
def outbox_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 200,
) -> None:
    """List messages in the outbox."""
    settings = get_settings()
    engine = engine_for(settings)
    with Session(engine) as session:
        query = select(Message).order_by(col(Message.created_at).desc()).limit(limit)
        if user:
            query = query.where(Message.user_id == user)
        messages = list(reversed(session.exec(query).all()))
    if as_json:
        for m in messages:
            sys.stdout.write(
                json.dumps(m.model_dump(mode="json", exclude={"html"}), ensure_ascii=False) + "\n"
            )
        return
    if not messages:
        console.print("The outbox is empty" + (f" for user {user}." if user else "."))
        return
    table = Table(title=f"Outbox ({len(messages)} messages)", title_justify="left")
    for column in ("sent at", "user", "step", "channel", "to", "subject", "status", "via"):
        table.add_column(column)
    for m in messages:
        when = m.sent_at or m.created_at
        table.add_row(
            f"{when:%Y-%m-%d %H:%M:%S}",
            m.user_id,
            m.step,
            m.channel,
            m.recipient,
            (m.subject[:60] + "…") if len(m.subject) > 60 else m.subject,
            m.status + (f" ({m.delivery_status})" if m.delivery_status else ""),
            m.provider,
        )
    console.print(table)
