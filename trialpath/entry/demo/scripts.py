"""The demo's sample users: each one's script of actions on its trial's journey clock, and how
its trial must look once it is over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trialpath.core.contract import Stage
from trialpath.core.definition import Persona


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
