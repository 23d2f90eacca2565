"""The demo: a dozen sample trial users with different behaviours on an accelerated clock.

Each sample user has a script of actions (events, call outcomes, conversion, extension,
cancellation) and, next to it, what its trial must look like once it is over: stage,
activation, persona, key messages sent or not. The demo starts their trials and plays the
scripts through the HTTP API, as a product's backend would, while showing live progress. Once
every trial has left its trial period and its workflow has caught up with what it was sent,
each is checked against its expectation: the final table gives a ✓, or an ✗ with what
differed. Running it again finds the existing trials (the API answers 200 for them) instead
of starting duplicates, and checks them as they are.

Actions are timed on each trial's own journey clock: a journey day after the signup the API
reported, or after the success call the trial itself scheduled (its day and hour follow the
urgency, the user's time zone and stalls, so a fixed day could fall before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time as dt_time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from trialpath.client import TrialpathError, error_for
from trialpath.core.contract import TERMINAL_STAGES, Qualification, Stage, TrialStatus
from trialpath.core.definition import GLOBAL_HOLDOUT, HOLDOUT_ARMS, JourneyDefinition, Persona
from trialpath.core.journey import FOLLOW_UP_SUFFIX, assign_arm
from trialpath.operations.models import CallSlot


@dataclass(frozen=True)
class AfterCall:
    """This many journey days after the trial's success call starts, as the trial has it
    when the moment comes (a stall can bring the call forward)."""

    days: float = 0.0


When = float | AfterCall
"""A journey day after signup, or a moment after the success call."""
Action = tuple[When, str, dict[str, Any]]
"""(when, API action, body): action is `event`, `call`, `conversion`, `extension`,
`unsubscribe`, `survey` (POST /v1/trials/{id}/<action>, `event` to /events) or `cancel`
(DELETE). Consecutive events due at the same moment go in one request."""

LATE_AFTER_DAYS = 1.0
"""A command (call outcome, conversion, extension, cancellation, unsubscribe, survey) sent more
than this many journey days after its scripted moment did not play as scripted: the check says
so, whatever the outcome. Events carry their scripted moment (`occurred_at`), as a backend
reporting what users did does, so they count when they happened however late they arrive."""
QUIET_DAYS = 1.0
"""A trial over whose status has not changed for this long (and whose workflow waits for
nothing) is taken as settled."""

GOALS: dict[str, list[tuple[str, int]]] = {
    "technical": [("integration_connected", 1), ("api_call", 10)],
    "business": [("workflow_created", 1), ("teammate_invited", 1)],
    "executive": [("dashboard_configured", 1), ("report_shared", 1)],
}
"""The events that meet each persona's activation rule (journey.toml)."""


def goal(persona: str, when: When) -> list[Action]:
    """The actions that activate a user of `persona`, all at `when`."""
    return [(when, "event", {"name": name}) for name, count in GOALS[persona] for _ in range(count)]


@dataclass(frozen=True)
class Expected:
    """How a scripted user's trial must look once it is over.

    Messages are journey.toml names (`activated`, `call_followup`, a drip step's message…),
    alone for any channel or as `name/channel`. The holdout arm of the experiment gets
    transactional messages only: marketing messages in `sent` are not expected of a holdout
    user (nor the support alert, which follows a delivered stall nudge)."""

    stage: Stage
    persona: Persona
    activated_by: float | None = None
    """Activated by this journey day (days after signup); None: never activated."""
    sent: tuple[str, ...] = ()
    not_sent: tuple[str, ...] = ()
    trial_days: int | None = None
    """Length of the trial in local calendar days, extensions included."""


@dataclass(frozen=True)
class ScriptedUser:
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
    expect: Expected | None = None


def scripted_users() -> list[ScriptedUser]:
    return [
        ScriptedUser(
            "tech-day1",
            "Ada Lovelace",
            "activates on day 1",
            "technical",
            "this_week",
            [(0.5, "event", {"name": "login"}), *goal("technical", 0.8)],
            phone="+33612345678",
            expect=Expected(
                "expired", "technical", activated_by=2.0, sent=("milestone", "activated")
            ),
        ),
        ScriptedUser(
            "biz-day1",
            "Grace Hopper",
            "activates on day 1",
            "business",
            "this_month",
            goal("business", 1.2),
            company="Navy Labs",
            expect=Expected(
                "expired", "business", activated_by=2.0, sent=("milestone", "activated")
            ),
        ),
        ScriptedUser(
            "exec-day1",
            "Katherine Johnson",
            "activates on day 1",
            "executive",
            "evaluating",
            goal("executive", 1.5),
            locale="fr",
            expect=Expected(
                "expired", "executive", activated_by=2.0, sent=("milestone", "activated")
            ),
        ),
        ScriptedUser(
            "tech-stall",
            "Alan Turing",
            "stalls, activates after the call",
            "technical",
            "this_month",
            [
                (
                    AfterCall(0.05),
                    "call",
                    {"action": "completed", "notes": "set up the first integration together"},
                ),
                *goal("technical", AfterCall(0.3)),
            ],
            company="Bletchley Park",
            expect=Expected(
                "expired",
                "technical",
                activated_by=7.0,
                # No support alert expected: whether it comes before the call's follow-up
                # events depends on the hour of signup in the user's time zone (the nudge
                # waits for the send window), by a margin a busy machine can eat.
                sent=("stall_nudge", "call_followup", "activated"),
            ),
        ),
        ScriptedUser(
            "biz-stall",
            "Margaret Hamilton",
            "stalls, activates after the call",
            "business",
            "this_month",
            [
                (AfterCall(0.05), "call", {"action": "completed", "notes": "first workflow live"}),
                *goal("business", AfterCall(0.3)),
            ],
            locale="fr",
            company="Apollo",
            expect=Expected(
                "expired",
                "business",
                activated_by=7.0,
                sent=("stall_nudge", "call_followup", "activated"),
            ),
        ),
        ScriptedUser(
            "exec-never",
            "Edsger Dijkstra",
            "never activates",
            "executive",
            "evaluating",
            # Low intent: the self-serve booking link rather than a call with an agent.
            expect=Expected("expired", "executive", sent=("call_self_serve", "trial_ending_0")),
        ),
        ScriptedUser(
            "biz-never",
            "Barbara Liskov",
            "never answers the qualifier, never activates",
            None,
            None,
            expect=Expected("expired", "business", sent=("welcome", "trial_ending_0")),
        ),
        ScriptedUser(
            "tech-convert",
            "Linus Torvalds",
            "converts mid-trial",
            "technical",
            "this_week",
            [*goal("technical", 1.0), (5.0, "conversion", {"plan": "team", "mrr": 99})],
            expect=Expected(
                "converted",
                "technical",
                activated_by=2.0,
                sent=("activated", "welcome_paid"),
                not_sent=("trial_ending_3",),
            ),
        ),
        ScriptedUser(
            "exec-convert",
            "Frances Allen",
            "converts mid-trial",
            "executive",
            "this_month",
            [*goal("executive", 2.0), (8.5, "conversion", {"plan": "business", "mrr": 490})],
            company="Allen & Co",
            expect=Expected(
                "converted",
                "executive",
                activated_by=3.0,
                sent=("activated", "welcome_paid"),
                not_sent=("trial_ending_3",),
            ),
        ),
        ScriptedUser(
            "biz-extend",
            "Donald Knuth",
            "asks for an extension on day 12",
            "business",
            "evaluating",
            [(2.5, "event", {"name": "workflow_created"}), (12.2, "extension", {"days": 3})],
            expect=Expected(
                "expired",
                "business",
                sent=("trial_extended", "trial_ending_0"),
                trial_days=17,
            ),
        ),
        ScriptedUser(
            "tech-cancel",
            "Dennis Ritchie",
            "cancels on day 3",
            "technical",
            "this_month",
            [(3.2, "cancel", {"reason": "went with an in-house tool"})],
            expect=Expected(
                "cancelled",
                "technical",
                sent=("welcome", "call_invite"),
                not_sent=("drip_integration_guides", "trial_ending_3"),
            ),
        ),
        ScriptedUser(
            "biz-unsub",
            "Radia Perlman",
            "unsubscribes from email, activates on day 6",
            "business",
            "this_month",
            [(0.6, "unsubscribe", {"channel": "email"}), *goal("business", 6.0)],
            challenge="team_coordination",
            expect=Expected(
                "expired",
                "business",
                activated_by=7.0,
                sent=("milestone", "activated/in_app"),
                not_sent=("activated/email", "trial_ending_0/email"),
            ),
        ),
    ]


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


# --- checking --------------------------------------------------------------------------------


def message_of(sent_key: str) -> tuple[str, str]:
    """(message, channel) of a sent key `trial-u:drip.drip_webhooks/email`,
    `trial-u:stall_nudge.1/in_app`: drip prefix, repeat number and the follow-up of an in-app
    message (`drip.drip_roi_calculator.unless_read/email`) dropped."""
    step = sent_key.rpartition(":")[2]  # user ids may hold ':', steps never do
    occurrence, _, channel = step.rpartition("/")
    name = occurrence.removeprefix("drip.").removesuffix(FOLLOW_UP_SUFFIX)
    head, dot, tail = name.rpartition(".")
    if dot and tail.isdigit():
        name = head
    return name, channel


def _matches(spec: str, sent: set[tuple[str, str]]) -> bool:
    name, _, channel = spec.partition("/")
    return any(n == name and (not channel or c == channel) for n, c in sent)


def differences(
    expected: Expected,
    status: TrialStatus,
    *,
    signup_at: datetime,
    timezone: str,
    seconds_per_day: float,
    definition: JourneyDefinition,
    arm: str,
    played: Sequence[Played] = (),
) -> list[str]:
    """What differs between a trial's final status (and how its script played) and its
    expectation, one phrase each; empty when it ended as scripted."""
    found: list[str] = []
    for p in played:
        if p.problem is not None:
            found.append(f"{p.what}: {p.problem}")
        elif not p.dated and p.late / seconds_per_day > LATE_AFTER_DAYS:
            found.append(f"{p.what}: sent {p.late / seconds_per_day:.1f} days late")
    if status.stage != expected.stage:
        found.append(f"stage {status.stage}, expected {expected.stage}")
    if status.persona != expected.persona:
        found.append(f"persona {status.persona or 'none'}, expected {expected.persona}")
    day = None
    if status.activated_at is not None:
        day = (status.activated_at - signup_at).total_seconds() / seconds_per_day
    if expected.activated_by is None and day is not None:
        found.append(f"activated on day {day:.1f}, expected never")
    elif expected.activated_by is not None and day is None:
        found.append(f"not activated, expected by day {expected.activated_by:g}")
    elif expected.activated_by is not None and day is not None and day > expected.activated_by:
        found.append(f"activated on day {day:.1f}, expected by day {expected.activated_by:g}")
    sent = {message_of(s.key) for s in status.sent}
    for spec in expected.sent:
        name = spec.partition("/")[0]
        if arm in HOLDOUT_ARMS and (
            definition.message(name).category == "marketing"
            or name == "support_alert"
            or (arm == GLOBAL_HOLDOUT and name.startswith("call_"))  # no call at all
        ):
            continue
        if not _matches(spec, sent):
            found.append(f"no {spec} sent")
    for spec in expected.not_sent:
        if _matches(spec, sent):
            found.append(f"{spec} sent")
    if expected.trial_days is not None and status.ends_on is not None:
        start = signup_at.astimezone(ZoneInfo(timezone)).date()
        days = (status.ends_on - start).days
        if days != expected.trial_days:
            found.append(f"a {days}-day trial, expected {expected.trial_days}")
    return found


def check(item: Tracked, seconds_per_day: float, definition: JourneyDefinition) -> list[str]:
    """The verdict on one tracked user (its expectation against its last status)."""
    arm = assign_arm(definition, item.user_id)
    expected = item.user.expect
    if expected is None:
        return []
    if item.status is None:
        return [f"no status ({item.error or 'never answered'})"]
    return differences(
        expected,
        item.status,
        signup_at=item.signup_at,
        timezone=item.user.timezone,
        seconds_per_day=clock_of(item, seconds_per_day),
        definition=definition,
        arm=arm,
        played=item.played,
    )


def _day(item: Tracked, at: datetime | None, seconds_per_day: float) -> str:
    if at is None:
        return "-"
    day = (at - item.signup_at).total_seconds() / clock_of(item, seconds_per_day)
    return f"day {day:.1f}"


def verdict_text(item: Tracked) -> Text:
    if item.verdict is None:
        return Text("…", style="dim")
    if not item.verdict:
        return Text("✓", style="bold green")
    return Text("✗ " + "; ".join(item.verdict), style="red")


def results_table(
    items: list[Tracked],
    seconds_per_day: float,
    title: str,
    definition: JourneyDefinition | None = None,
) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["user", "behaviour", "arm", "persona", "stage", "activated at", "messages sent"]
    for column in [*columns, "as scripted"]:
        if column == "arm" and definition is None:
            continue
        table.add_column(column, no_wrap=column not in ("behaviour", "as scripted"))
    for item in items:
        arm = [assign_arm(definition, item.user_id)] if definition is not None else []
        st = item.status
        if st is None:
            table.add_row(
                item.user_id,
                item.user.behaviour,
                *arm,
                "?",
                item.error or "starting",
                "-",
                "-",
                verdict_text(item),
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
            *arm,
            st.persona or "?",
            stage,
            _day(item, st.activated_at, seconds_per_day),
            f"{len(st.sent)} ({counts})" if counts else "0",
            verdict_text(item),
        )
    return table


async def support_queue(api: httpx.AsyncClient, prefix: str) -> Table | None:
    """The support tasks the demo's journeys opened (`GET /v1/tasks`), oldest first; None when
    the API key may not read the queue."""
    response = await api.get("/v1/tasks", params={"state": "all", "limit": 500})
    if response.status_code in (401, 403):
        return None
    page = _check(response)
    mine = [
        t
        for t in page["tasks"]
        if t["user_id"].startswith(f"{prefix}-") and not t["user_id"].startswith(f"{prefix}-pop-")
    ]
    open_ = sum(t["state"] != "closed" for t in mine)
    table = Table(title=f"Support queue: {open_} open task(s) of {len(mine)}", title_justify="left")
    for column in ("task", "kind", "state", "owner", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for t in mine:
        table.add_row(t["key"], t["kind"], t["state"], t["owner"] or "nobody", t["reason"])
    return table


def calls_table(slots: Sequence[CallSlot], timezone: str = "Europe/Paris") -> Table:
    """The success calls booked in the agents' calendars: one row per agent, their calls in
    order (journey time, in the demo users' time zone)."""
    zone = ZoneInfo(timezone)
    table = Table(title=f"Success calls by agent ({timezone})", title_justify="left")
    for column in ("agent", "calls", "booked slots"):
        table.add_column(column, no_wrap=column != "booked slots")
    by_agent: dict[str, list[CallSlot]] = {}
    for slot in sorted(slots, key=lambda s: (s.agent, s.start_at)):
        by_agent.setdefault(slot.agent, []).append(slot)
    for agent, calls in by_agent.items():
        table.add_row(
            agent,
            str(len(calls)),
            ", ".join(
                f"{c.start_at.astimezone(zone):%a %H:%M} {c.workflow_id.removeprefix('trial-')}"
                for c in calls
            ),
        )
    return table


def delays(items: list[Tracked]) -> tuple[list[float], list[float]]:
    """Per accepted request, seconds from its scripted moment to its sending, and to the
    API's answer."""
    played = [p for i in items for p in i.played if p.problem is None]
    return [p.late for p in played], [p.answered - p.due for p in played]


async def run_demo(
    api: httpx.AsyncClient,
    seconds_per_day: float,
    console: Console,
    definition: JourneyDefinition,
    prefix: str = "demo",
    check_alive: Callable[[], None] | None = None,
    caught_up: Callable[[], Awaitable[None]] | None = None,
    max_seconds: float | None = None,
) -> list[Tracked]:
    """Plays the demo through the API until every trial is over and settled, then checks each
    against its expectation (`Tracked.verdict`). `check_alive` raises if a service died;
    `caught_up` waits until the worker has no backlog (before the trials start, and before
    they are checked). Past `max_seconds` (default: twice the longest trial, plus a minute)
    the trials are checked as they stand."""
    if caught_up is not None:
        await caught_up()
    items = await start_trials(api, prefix)
    new = [i for i in items if not i.existing]
    for item in items:
        item.script_done = item.existing
    if len(new) < len(items):
        console.print(
            f"[yellow]{len(items) - len(new)} demo trials already exist; checking them as they "
            f"are (use --prefix to start a fresh set).[/]"
        )
    players = [asyncio.create_task(play(api, i, seconds_per_day, dated=True)) for i in new]
    longest = 14 + 3 + 1
    if max_seconds is None:
        max_seconds = 2 * longest * seconds_per_day + 60
    progress = Progress(
        TextColumn("[bold]journey day {task.completed:.1f} of ~{task.total:.0f}"),
        BarColumn(),
        TextColumn("{task.fields[done]} of {task.fields[trials]} trials over"),
    )
    task = progress.add_task("demo", total=longest, done=0, trials=len(items))
    started = min(i.signup_at for i in items)
    deadline = time.monotonic() + max_seconds
    poll = max(0.5, seconds_per_day / 4)
    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            while True:
                if check_alive:
                    check_alive()
                await refresh(api, items)
                done = sum(finished(i) for i in items)
                elapsed_days = (datetime.now(UTC) - started).total_seconds() / seconds_per_day
                progress.update(task, completed=min(elapsed_days, longest), done=done)
                live.update(
                    Group(progress, results_table(items, seconds_per_day, "Trials", definition))
                )
                late = time.monotonic() > deadline
                if all(settled(i, seconds_per_day) for i in items) or late:
                    break
                await asyncio.sleep(poll)
    finally:
        for player in players:
            player.cancel()
    if caught_up is not None and not late:
        await caught_up()
        await refresh(api, items)
    for item in items:
        item.verdict = check(item, seconds_per_day, definition)
        if late and not settled(item, seconds_per_day):
            item.verdict.insert(0, f"not settled after {max_seconds:.0f} s")
    return items
