"""Signals written to the database before they are sent: the product's events (stored with the
event in one transaction) and support's task outcomes. Delivered to the trial, a trial's events
in one `events` signal, each batch marked in one transaction; what fails stays queued and is
sent again later (the API's background loop, or the next request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from trialpath.core.contract import (
    MAX_EVENTS_PER_SIGNAL,
    SIGNAL_EVENT,
    SIGNAL_EVENTS,
    workflow_id_for,
)
from trialpath.operations.models import PendingSignal, TrialEvent, utcnow

RPC_TIMEOUT = timedelta(seconds=10)
"""How long a call to Temporal may take before the operation reports it unavailable."""


@dataclass
class SignalQueue:
    client: Client
    engine: Engine

    async def deliver(self, ids: Sequence[int] | None = None, limit: int = 200) -> int:
        """Sends queued signals (the given ones, or the oldest undelivered); returns how many
        were delivered. Failures stay queued and are retried later."""
        outcomes = await self.send(ids, limit)
        return sum(error is None for _, error, _ in outcomes)

    async def send(
        self, ids: Sequence[int] | None = None, limit: int = 200
    ) -> list[tuple[int, str | None, bool]]:
        """Sends queued signals and marks them; for each row: (row id, error or None, whether
        the trial is gone for good)."""
        rows = await asyncio.to_thread(self._pending, ids, limit)
        return await self.send_rows(rows)

    async def send_rows(self, rows: Sequence[PendingSignal]) -> list[tuple[int, str | None, bool]]:
        """`send` for rows already read (or just written)."""
        # Signals go out together and are marked in one transaction: a batch of 100 events
        # costs one commit, not 100. A trial's events go in one `events` signal (one Temporal
        # action); the workflow does not depend on their order (events carry their time and id).
        groups: dict[str, list[PendingSignal]] = {}
        batches: list[list[PendingSignal]] = []
        for row in rows:
            if row.signal == SIGNAL_EVENT:
                groups.setdefault(row.workflow_id, []).append(row)
            else:
                batches.append([row])
        for group in groups.values():
            # At most what one `events` signal carries (redelivery can find more for a trial).
            for i in range(0, len(group), MAX_EVENTS_PER_SIGNAL):
                batches.append(group[i : i + MAX_EVENTS_PER_SIGNAL])
        sent = await asyncio.gather(*(self._send(rows) for rows in batches))
        outcomes = [outcome for group in sent for outcome in group]
        await asyncio.to_thread(self._mark, outcomes)
        return outcomes

    async def _send(self, rows: list[PendingSignal]) -> list[tuple[int, str | None, bool]]:
        """For each row: (row id, error or None, whether the trial is gone for good). Several
        rows are a trial's events, sent as one `events` signal."""
        handle = self.client.get_workflow_handle(rows[0].workflow_id)
        if len(rows) == 1:
            name, payload = rows[0].signal, rows[0].payload
        else:
            name, payload = SIGNAL_EVENTS, {"events": [row.payload for row in rows]}
        error, gone = None, False
        try:
            await handle.signal(name, payload, rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            error, gone = str(err), err.status == RPCStatusCode.NOT_FOUND
        outcomes = []
        for row in rows:
            assert row.id is not None  # read back from the database
            outcomes.append((row.id, error, gone))
        return outcomes

    def _pending(self, ids: Sequence[int] | None, limit: int) -> list[PendingSignal]:
        with Session(self.engine) as session:
            query = select(PendingSignal).where(
                col(PendingSignal.delivered_at).is_(None), col(PendingSignal.failed).is_(False)
            )
            if ids is not None:
                if not ids:
                    return []
                query = query.where(col(PendingSignal.id).in_(list(ids)))
            return list(session.exec(query.order_by(col(PendingSignal.id)).limit(limit)).all())

    def _mark(self, outcomes: Sequence[tuple[int, str | None, bool]]) -> None:
        if not outcomes:
            return
        with Session(self.engine) as session:
            for row_id, error, gone in outcomes:
                row = session.get(PendingSignal, row_id)
                if row is None:
                    continue
                row.attempts += 1
                if error is None:
                    row.delivered_at = utcnow()
                else:
                    row.last_error = error[:500]
                    row.failed = gone
                    if gone and row.signal == SIGNAL_EVENT:
                        # The trial ended first: the event never reached it, so it does not
                        # count (the KPIs read `counted`).
                        user_id = row.workflow_id.removeprefix(workflow_id_for(""))
                        event = session.get(TrialEvent, f"{user_id}:{row.payload.get('id')}")
                        if event is not None and event.counted:
                            event.counted = False
                            session.add(event)
                session.add(row)
            session.commit()

    def pending_count(self) -> int:
        with Session(self.engine) as session:
            return len(
                session.exec(
                    select(PendingSignal.id).where(
                        col(PendingSignal.delivered_at).is_(None),
                        col(PendingSignal.failed).is_(False),
                    )
                ).all()
            )
