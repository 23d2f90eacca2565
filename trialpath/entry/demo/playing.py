"""Playing the sample users' scripts through the HTTP API: starting their trials, sending each
action at its moment, and following each trial's status until it has settled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time as dt_time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from trialpath.client import TrialpathError, error_for
from trialpath.core.contract import TERMINAL_STAGES, Qualification, TrialStatus
from trialpath.entry.demo.scripts import Action, AfterCall, ScriptedUser, When, scripted_users

QUIET_DAYS = 1.0
"""A trial over whose status has not changed for this long (and whose workflow waits for
nothing) is taken as settled."""


@dataclass
class Played:
    """One request of a script: when it was due, sent and answered (epoch seconds)."""

    what: str
    due: float
    sent: float
    answered: float
    problem: str | None = None
    dated: bool = False
    """It carried its scripted moment (events sent with `occurred_at`)."""

    @property
    def late(self) -> float:
        """Seconds between its scripted moment and its sending (the demo's own delay)."""
        return self.sent - self.due


@dataclass
class Tracked:
    user: ScriptedUser
    user_id: str
    existing: bool
    signup_at: datetime
    status: TrialStatus | None = None
    error: str | None = None
    played: list[Played] = field(default_factory=list)
    script_done: bool = False
    events_sent: Counter[str] = field(default_factory=Counter)
    changed_at: float = 0.0
    """Monotonic time the status last changed (settling)."""
    verdict: list[str] | None = None
    """What differed from the expectation once checked; empty: as scripted."""


def signup_body(user: ScriptedUser, user_id: str) -> dict[str, Any]:
    qualification = None
    if user.persona or user.challenge or user.urgency:
        qualification = Qualification.model_validate(
            {"role": user.persona, "urgency": user.urgency, "challenge": user.challenge}
        ).model_dump()
    return {
        "user_id": user_id,
        "name": user.name,
        "email": f"{user.key}@demo.trialpath.example",
        "phone": user.phone,
        "locale": user.locale,
        "timezone": user.timezone,
        "company": user.company,
        "qualification": qualification,
    }


def _check(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON body; an error answer raises the client's `TrialpathError`, its
    problem detail parsed."""
    if response.status_code >= 400:
        raise error_for(response)
    body: dict[str, Any] = response.json()
    return body


async def start_trials(api: httpx.AsyncClient, prefix: str) -> list[Tracked]:
    """Starts every sample trial through the API; existing ones are found (200), not duplicated."""
    tracked = []
    for user in scripted_users():
        user_id = f"{prefix}-{user.key}"
        response = await api.post("/v1/trials", json=signup_body(user, user_id))
        created = _check(response)
        signup_at = datetime.fromisoformat(created["signup_at"])
        tracked.append(Tracked(user, user_id, response.status_code == 200, signup_at))
    return tracked


def _request(user_id: str, action: str, payload: Any) -> tuple[str, str, Any]:
    """(method, path, JSON body) of the API request for one scripted action."""
    base = f"/v1/trials/{user_id}"
    if action == "event":
        return "POST", f"{base}/events", payload
    if action == "cancel":
        return "DELETE", f"{base}?reason={payload.get('reason', '')}", None
    return "POST", f"{base}/{action}", payload


def batches(script: list[Action]) -> list[tuple[When, str, Any]]:
    """The script's requests in order: consecutive events due at the same moment go together
    (the API takes up to 100 in one request)."""
    found: list[tuple[When, str, Any]] = []
    for when, action, payload in script:
        last = found[-1] if found else None
        if action == "event" and last is not None and last[1] == "event" and last[0] == when:
            last[2].append(payload)
        else:
            found.append((when, action, [payload] if action == "event" else payload))
    return found


def describe(when: When, action: str, payload: Any) -> str:
    """`day 4.2 call completed`, `0.3 days after the call: 11 events`."""
    moment = (
        f"{when.days:g} days after the call" if isinstance(when, AfterCall) else f"day {when:g}"
    )
    if action == "event":
        names = Counter(p["name"] for p in payload)
        what = ", ".join(f"{n} ×{c}" if c > 1 else n for n, c in names.items())
    elif action == "call":
        what = f"call {payload.get('action')}"
    else:
        what = action
    return f"{moment}: {what}"


StatusReader = Callable[[Tracked], Awaitable[TrialStatus | None]]


async def read_status(api: httpx.AsyncClient, item: Tracked) -> TrialStatus | None:
    try:
        return TrialStatus.model_validate(_check(await api.get(f"/v1/trials/{item.user_id}")))
    except (TrialpathError, httpx.HTTPError) as err:
        item.error = str(err)
        return None


async def _due(
    item: Tracked, when: When, seconds_per_day: float, status: StatusReader
) -> float | None:
    """When the action is due (epoch seconds), waiting for the success call if it follows it;
    None if the trial ended with no call to follow."""
    if not isinstance(when, AfterCall):
        return item.signup_at.timestamp() + when * seconds_per_day
    poll = max(0.2, seconds_per_day / 8)
    while True:
        st = await status(item)
        if st is not None:
            call = st.call
            if call.at is not None and call.state in ("scheduled", "booked", "no_show"):
                due = call.at.timestamp() + when.days * seconds_per_day
                # The call can still move (a stall brings it forward): look again until due.
                if time.time() >= due:
                    return due
                await asyncio.sleep(min(poll, due - time.time()))
                continue
            if call.state == "completed":
                assert call.at is not None
                return call.at.timestamp() + when.days * seconds_per_day
            if st.stage in TERMINAL_STAGES:
                return None
        await asyncio.sleep(poll)


Slot = Callable[[], contextlib.AbstractAsyncContextManager[object]]
"""Where a request waits its turn (bounded requests in flight); none: it goes at once."""


async def play(
    api: httpx.AsyncClient,
    item: Tracked,
    seconds_per_day: float,
    status: StatusReader | None = None,
    slot: Slot | None = None,
    dated: bool = False,
    on_played: Callable[[Played], None] | None = None,
) -> None:
    """Sends the user's scripted actions through the API at their moments on the trial's
    journey clock; stops at the first one refused (kept in `played`). With `dated`, each
    event carries its scripted moment as `occurred_at`, as a backend that reports what
    users did (in batches, or late) does."""
    reader: StatusReader = status or (lambda i: read_status(api, i))
    try:
        for when, action, payload in batches(item.user.script):
            due = await _due(item, when, seconds_per_day, reader)
            what = describe(when, action, payload)
            if due is None:
                now = time.time()
                item.played.append(Played(what, now, now, now, "the trial ended with no call"))
                return
            await asyncio.sleep(max(0.0, due - time.time()))
            if dated and action == "event":
                moment = datetime.fromtimestamp(due, UTC).isoformat()
                payload = [{**p, "occurred_at": moment} for p in payload]
            method, path, body = _request(item.user_id, action, payload)
            problem = None
            async with slot() if slot is not None else contextlib.nullcontext():
                sent = time.time()
                try:
                    _check(await api.request(method, path, json=body))
                except (TrialpathError, httpx.HTTPError) as err:
                    problem = str(err) or err.__class__.__name__
            played = Played(what, due, sent, time.time(), problem, dated and action == "event")
            item.played.append(played)
            if on_played is not None:
                on_played(played)
            if problem is not None:
                return
            if action == "event":
                item.events_sent.update(p["name"] for p in payload)
    finally:
        item.script_done = True


async def refresh(api: httpx.AsyncClient, items: list[Tracked]) -> None:
    async def one(item: Tracked) -> None:
        status = await read_status(api, item)
        if status is None:
            return
        if item.status is None or status.model_dump() != item.status.model_dump():
            item.changed_at = time.monotonic()
        item.status = status
        item.error = None

    await asyncio.gather(*(one(i) for i in items))


def trial_clock(status: TrialStatus, signup_at: datetime, timezone: str) -> float | None:
    """The seconds per journey day a trial runs at, read from its status: the end of its
    last day is `trial_ends_at` on the wall clock and the local midnight after `ends_on` on
    the journey clock, and both clocks meet at signup. None before the trial has an end."""
    if status.ends_on is None:
        return None
    end = datetime.combine(status.ends_on + timedelta(days=1), dt_time(0), ZoneInfo(timezone))
    journey = (end - signup_at).total_seconds()
    real = (status.trial_ends_at - signup_at).total_seconds()
    if journey <= 0 or real <= 0:
        return None
    return 86400.0 * real / journey


def clock_of(item: Tracked, default: float) -> float:
    """The trial's own clock (a trial found from an earlier run may run at another speed)."""
    if item.status is None:
        return default
    return trial_clock(item.status, item.signup_at, item.user.timezone) or default


def finished(item: Tracked) -> bool:
    return item.status is not None and item.status.stage in TERMINAL_STAGES


def settled(
    item: Tracked, seconds_per_day: float, now: float | None = None, wall: float | None = None
) -> bool:
    """Over, its script played, every event sent seen by the workflow, and the workflow
    waiting for a step still to come (a wake-up already past: the worker is behind), or
    quiet for a journey day (ended). `now` is monotonic, `wall` epoch seconds."""
    st = item.status
    if st is None or st.stage not in TERMINAL_STAGES or not item.script_done:
        return False
    if any(st.events_seen.get(name, 0) < n for name, n in item.events_sent.items()):
        return False
    if st.next_wakeup is not None:
        return st.next_wakeup.timestamp() > (wall if wall is not None else time.time())
    quiet = (now if now is not None else time.monotonic()) - item.changed_at
    return quiet >= QUIET_DAYS * seconds_per_day
