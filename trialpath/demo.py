"""The demo: a dozen sample trial users with different behaviours on an accelerated clock.

Each sample user has a script of actions at journey days (events, call outcomes, conversion,
extension, cancellation). The demo starts their trials and plays the scripts through the HTTP
API, as a product's backend would, while showing live progress, and ends with a table per user
once every trial has left its trial period. Running it again finds the existing trials (the API
answers 200 for them) instead of starting duplicates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from trialpath.contract import TERMINAL_STAGES, Qualification, TrialStatus

Action = tuple[float, str, dict[str, Any]]
"""(journey day, API action, body): action is `event`, `call`, `conversion`, `extension`,
`unsubscribe` (POST /v1/trials/{id}/<action>, `event` to /events) or `cancel` (DELETE)."""


def _goal(persona: str, day: float) -> list[Action]:
    events = {
        "technical": [("integration_connected", 1), ("api_call", 10)],
        "business": [("workflow_created", 1), ("teammate_invited", 1)],
        "executive": [("dashboard_configured", 1), ("report_shared", 1)],
    }[persona]
    return [(day, "event", {"name": name}) for name, count in events for _ in range(count)]


@dataclass(frozen=True)
class SampleUser:
    key: str
    name: str
    behaviour: str
    persona: str | None
    urgency: str | None
    script: list[Action] = field(default_factory=list)
    company: str = ""
    locale: str = "en"
    timezone: str = "Europe/Paris"
    phone: str | None = None
    challenge: str | None = None


def sample_users() -> list[SampleUser]:
    return [
        SampleUser(
            "tech-day1",
            "Ada Lovelace",
            "activates on day 1",
            "technical",
            "this_week",
            [(0.5, "event", {"name": "login"}), *_goal("technical", 0.8)],
            phone="+33612345678",
        ),
        SampleUser(
            "biz-day1",
            "Grace Hopper",
            "activates on day 1",
            "business",
            "this_month",
            _goal("business", 1.2),
            company="Navy Labs",
        ),
        SampleUser(
            "exec-day1",
            "Katherine Johnson",
            "activates on day 1",
            "executive",
            "evaluating",
            _goal("executive", 1.5),
            locale="fr",
        ),
        SampleUser(
            "tech-stall",
            "Alan Turing",
            "stalls, activates after the call",
            "technical",
            "evaluating",
            [
                (
                    4.25,
                    "call",
                    {"action": "completed", "notes": "set up the first integration together"},
                ),
                *_goal("technical", 4.6),
            ],
            company="Bletchley Park",
        ),
        SampleUser(
            "biz-stall",
            "Margaret Hamilton",
            "stalls, activates after the call",
            "business",
            "this_month",
            [
                (4.2, "call", {"action": "completed", "notes": "built the first workflow live"}),
                *_goal("business", 4.5),
            ],
            locale="fr",
            company="Apollo",
        ),
        SampleUser("exec-never", "Edsger Dijkstra", "never activates", "executive", "evaluating"),
        SampleUser(
            "biz-never",
            "Barbara Liskov",
            "never answers the qualifier, never activates",
            None,
            None,
        ),
        SampleUser(
            "tech-convert",
            "Linus Torvalds",
            "converts mid-trial",
            "technical",
            "this_week",
            [*_goal("technical", 1.0), (5.0, "conversion", {"plan": "team", "mrr": 99})],
        ),
        SampleUser(
            "exec-convert",
            "Frances Allen",
            "converts mid-trial",
            "executive",
            "this_month",
            [*_goal("executive", 2.0), (8.5, "conversion", {"plan": "business", "mrr": 490})],
            company="Allen & Co",
        ),
        SampleUser(
            "biz-extend",
            "Donald Knuth",
            "asks for an extension on day 12",
            "business",
            "evaluating",
            [(2.5, "event", {"name": "workflow_created"}), (12.2, "extension", {"days": 3})],
        ),
        SampleUser(
            "tech-cancel",
            "Dennis Ritchie",
            "cancels on day 3",
            "technical",
            "this_month",
            [(3.2, "cancel", {"reason": "went with an in-house tool"})],
        ),
        SampleUser(
            "biz-unsub",
            "Radia Perlman",
            "unsubscribes from email, activates on day 6",
            "business",
            "this_month",
            [(0.6, "unsubscribe", {"channel": "email"}), *_goal("business", 6.0)],
            challenge="team_coordination",
        ),
    ]


@dataclass
class Tracked:
    user: SampleUser
    user_id: str
    existing: bool
    signup_at: datetime
    status: TrialStatus | None = None
    error: str | None = None


def signup_body(user: SampleUser, user_id: str) -> dict[str, Any]:
    qualification = None
    if user.persona or user.challenge:
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


class DemoError(RuntimeError):
    """The API refused a demo request; the message carries its problem detail."""


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise DemoError(f"{response.request.method} {response.request.url.path}: {detail}")
    body: dict[str, Any] = response.json()
    return body


async def start_trials(api: httpx.AsyncClient, prefix: str) -> list[Tracked]:
    """Starts every sample trial through the API; existing ones are found (200), not duplicated."""
    tracked = []
    for user in sample_users():
        user_id = f"{prefix}-{user.key}"
        response = await api.post("/v1/trials", json=signup_body(user, user_id))
        created = _check(response)
        signup_at = datetime.fromisoformat(created["signup_at"])
        tracked.append(Tracked(user, user_id, response.status_code == 200, signup_at))
    return tracked


def _request(user_id: str, action: str, payload: dict[str, Any]) -> tuple[str, str, Any]:
    """(method, path, JSON body) of the API request for one scripted action."""
    base = f"/v1/trials/{user_id}"
    if action == "event":
        return "POST", f"{base}/events", payload
    if action == "cancel":
        return "DELETE", f"{base}?reason={payload.get('reason', '')}", None
    return "POST", f"{base}/{action}", payload


async def play(api: httpx.AsyncClient, item: Tracked, seconds_per_day: float) -> None:
    """Sends the user's scripted actions through the API at their journey days."""
    for day, action, payload in sorted(item.user.script, key=lambda a: a[0]):
        due = item.signup_at.timestamp() + day * seconds_per_day
        await asyncio.sleep(max(0.0, due - time.time()))
        method, path, body = _request(item.user_id, action, payload)
        try:
            _check(await api.request(method, path, json=body))
        except (DemoError, httpx.HTTPError) as err:
            item.error = str(err)
            return


async def refresh(api: httpx.AsyncClient, items: list[Tracked]) -> None:
    async def one(item: Tracked) -> None:
        try:
            item.status = TrialStatus.model_validate(
                _check(await api.get(f"/v1/trials/{item.user_id}"))
            )
        except (DemoError, httpx.HTTPError) as err:
            item.error = str(err)

    await asyncio.gather(*(one(i) for i in items))


def finished(item: Tracked) -> bool:
    return item.status is not None and item.status.stage in TERMINAL_STAGES


def _day(item: Tracked, at: datetime | None, seconds_per_day: float) -> str:
    if at is None:
        return "-"
    return f"day {(at - item.signup_at).total_seconds() / seconds_per_day:.1f}"


def results_table(items: list[Tracked], seconds_per_day: float, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("user", "behaviour", "persona", "stage", "activated at", "messages sent"):
        table.add_column(column, no_wrap=column != "behaviour")
    for item in items:
        st = item.status
        if st is None:
            table.add_row(
                item.user_id, item.user.behaviour, "?", item.error or "starting", "-", "-"
            )
            continue
        by_channel: dict[str, int] = {}
        for sent in st.sent:
            by_channel[sent.channel] = by_channel.get(sent.channel, 0) + 1
        counts = ", ".join(f"{n} {c}" for c, n in sorted(by_channel.items()))
        stage = st.stage + (" (existing)" if item.existing else "")
        table.add_row(
            item.user_id,
            item.user.behaviour,
            st.persona or "?",
            stage,
            _day(item, st.activated_at, seconds_per_day),
            f"{len(st.sent)} ({counts})" if counts else "0",
        )
    return table


async def run_demo(
    api: httpx.AsyncClient,
    seconds_per_day: float,
    console: Console,
    prefix: str = "demo",
    check: Callable[[], None] | None = None,
    max_seconds: float | None = None,
) -> list[Tracked]:
    """Plays the demo through the API until every trial is over; `check` raises if a service
    died."""
    items = await start_trials(api, prefix)
    new = [i for i in items if not i.existing]
    if len(new) < len(items):
        console.print(
            f"[yellow]{len(items) - len(new)} demo trials already exist; showing them as they are "
            f"(use --prefix to start a fresh set).[/]"
        )
    players = [asyncio.create_task(play(api, i, seconds_per_day)) for i in new]
    longest = 14 + 3 + 1
    progress = Progress(
        TextColumn("[bold]journey day {task.completed:.1f} of ~{task.total:.0f}"),
        BarColumn(),
        TextColumn("{task.fields[done]} of {task.fields[trials]} trials over"),
    )
    task = progress.add_task("demo", total=longest, done=0, trials=len(items))
    started = min(i.signup_at for i in items)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while True:
                if check:
                    check()
                await refresh(api, items)
                done = sum(finished(i) for i in items)
                elapsed_days = (datetime.now(UTC) - started).total_seconds() / seconds_per_day
                progress.update(task, completed=min(elapsed_days, longest), done=done)
                live.update(Group(progress, results_table(items, seconds_per_day, "Trials")))
                if done == len(items):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"demo not finished after {max_seconds:.0f}s")
                await asyncio.sleep(0.5)
    finally:
        for player in players:
            player.cancel()
    return items
