"""The journey drawn for the people who write it: `trialpath journey show --format mermaid|html`.

One map is built from a journey definition (`journey_map`), then drawn two ways:

- `to_mermaid`: a Mermaid flowchart (GitHub, GitLab and most wikis render it), one subgraph per
  phase and per persona, messages as rounded boxes coloured by category, waits as slanted boxes
  and decisions as diamonds;
- `to_html`: a self-contained page (no script, no network) with the same phases as lanes and the
  personas side by side, each message linking to its card in the template preview, so the copy
  and the place it has in the path are one click apart. The preview serves it at `/journey`.

The map says what the definition says (drip days, skip rules, the stall and inactivity rules,
who is offered a call, the end-of-trial days, surveys, experiment arms) and the journey rules'
fixed shape around it (the qualifier, the call's reminders, conversion). A message of the
definition that no phase places is still drawn, under "Other messages", so a new one is never
hidden.
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from trialpath.core.definition import PERSONAS, JourneyDefinition

NodeKind = Literal["start", "message", "wait", "decision", "event", "end"]

CHANNEL_NAMES = {"email": "email", "sms": "SMS", "in_app": "in-app", "support": "support"}


@dataclass(frozen=True)
class Node:
    id: str
    kind: NodeKind
    label: str
    message: str | None = None
    """The message this node sends (its template), for message nodes."""
    channels: tuple[str, ...] = ()
    category: str | None = None
    note: str = ""
    persona: str | None = None
    """The persona whose path this node is on; None for the phases everyone goes through."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str = ""


@dataclass
class Lane:
    id: str
    title: str
    nodes: list[Node] = field(default_factory=list)
    persona: str | None = None


@dataclass
class JourneyMap:
    version: str
    trial_days: int
    lanes: list[Lane]
    edges: list[Edge]
    notes: list[str]

    def nodes(self) -> Iterable[Node]:
        for lane in self.lanes:
            yield from lane.nodes

    def message_nodes(self, message: str) -> list[Node]:
        return [n for n in self.nodes() if n.message == message]

    def anchor(self, message: str, persona: str | None = None) -> str | None:
        """The node a link to `message` should land on: the one on `persona`'s path if the
        message is drawn there, else the first place it is drawn; None if it is not drawn."""
        nodes = self.message_nodes(message)
        for node in nodes:
            if node.persona == persona:
                return node.id
        return nodes[0].id if nodes else None


def node_id(*parts: str) -> str:
    """A node id Mermaid and HTML anchors both accept: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))


def _days(value: float) -> str:
    return f"{value:g} day" if value == 1 else f"{value:g} days"


def _hours(value: float) -> str:
    return f"{value:g} hour" if value == 1 else f"{value:g} hours"


def _rule(require: dict[str, int]) -> str:
    return ", ".join(
        f"{event} ×{count}" if count > 1 else event for event, count in require.items()
    )


class _Builder:
    def __init__(self, defn: JourneyDefinition) -> None:
        self.defn = defn
        self.lanes: list[Lane] = []
        self.edges: list[Edge] = []
        self.placed: set[str] = set()

    def lane(self, id: str, title: str, persona: str | None = None) -> Lane:
        lane = Lane(id, title, persona=persona)
        self.lanes.append(lane)
        return lane

    def message(
        self, lane: Lane, message: str, when: str, *, key: str = "", note: str = ""
    ) -> Node | None:
        """A message node, or None when the definition does not have that message (an optional
        one a journey left out)."""
        spec = self.defn.messages.get(message)
        if spec is None:
            return None
        channels = spec.channels
        if spec.fallback and spec.fallback not in channels:
            note = _join(note, f"{CHANNEL_NAMES[spec.fallback]} if that fails")
        if spec.unless_read_hours is not None:
            note = _join(note, _unless_read(spec.unless_read_hours))
        node = Node(
            node_id("msg", lane.id, key or message),
            "message",
            when,
            message=message,
            channels=channels,
            category=spec.category,
            note=note,
            persona=lane.persona,
        )
        lane.nodes.append(node)
        self.placed.add(message)
        return node

    def node(self, lane: Lane, key: str, kind: NodeKind, label: str, note: str = "") -> Node:
        node = Node(node_id(lane.id, key), kind, label, note=note, persona=lane.persona)
        lane.nodes.append(node)
        return node

    def link(self, source: Node | None, target: Node | None, label: str = "") -> None:
        if source is not None and target is not None:
            self.edges.append(Edge(source.id, target.id, label))

    def chain(self, nodes: Iterable[Node | None], labels: Iterable[str] | None = None) -> None:
        present = [n for n in nodes if n is not None]
        names = list(labels or [])
        for i, (a, b) in enumerate(itertools.pairwise(present)):
            self.link(a, b, names[i] if i < len(names) else "")


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _unless_read(hours: float) -> str:
    return f"in-app first; the other channels {_hours(hours)} later unless it was read"


def journey_map(defn: JourneyDefinition) -> JourneyMap:
    """The journey as phases (lanes) of nodes and the arrows between them."""
    b = _Builder(defn)
    notes: list[str] = []

    # Signup and the qualifier.
    signup = b.lane("signup", "Signup and qualifier")
    start = b.node(signup, "start", "start", "Signup")
    welcome = b.message(signup, "welcome", "At once")
    qualifier = b.node(
        signup,
        "qualifier",
        "wait",
        f"Qualifier answered, or after {_hours(defn.qualifier_timeout_hours)}",
    )
    persona = b.node(
        signup,
        "persona",
        "decision",
        "Which persona?",
        note=(
            "the answer's role; unanswered: from the challenge, else from the events seen, "
            f"else {defn.default_persona}"
        ),
    )
    b.chain([start, welcome, qualifier, persona])

    # One path per persona.
    for name in PERSONAS:
        path = defn.personas[name]
        lane = b.lane(f"path_{name}", path.label, persona=name)
        entry = b.node(lane, "entry", "event", f"{name.capitalize()} path")
        b.link(persona, entry, name)
        previous: Node | None = entry
        previous_day = 0
        for step in sorted(path.drip, key=lambda s: s.day):
            note = (
                f"skipped if the user already did {', '.join(step.skip_if)}" if step.skip_if else ""
            )
            if step.unless_read_hours is not None:
                note = _join(note, _unless_read(step.unless_read_hours))
            node = Node(
                node_id("msg", lane.id, step.message),
                "message",
                f"Day {step.day}",
                message=step.message,
                channels=step.channels,
                category="marketing",
                note=note,
                persona=name,
            )
            lane.nodes.append(node)
            b.placed.add(step.message)
            gap = step.day - previous_day
            b.link(previous, node, f"wait {_days(gap)}" if gap > 0 else "")
            previous, previous_day = node, step.day
        milestone_event = b.node(lane, "milestone_event", "event", f"Milestone: {path.milestone}")
        b.link(entry, milestone_event, "when it happens")
        milestone = b.message(lane, "milestone", "Milestone reached", key="milestone")
        b.link(milestone_event, milestone)
        rule = path.activation
        activation = b.node(
            lane,
            "activation",
            "event",
            f"Activated: {_rule(dict(rule.require))} within {_days(rule.within_days)}",
        )
        b.link(entry, activation, "when it happens")
        activated = b.message(lane, "activated", "In the send window", key="activated")
        b.link(activation, activated)
        surveys = defn.surveys
        if surveys is not None and surveys.csat_after_onboarding_hours is not None:
            asked = b.message(
                lane,
                "survey_onboarding",
                f"{_hours(surveys.csat_after_onboarding_hours)} after activation or purchase",
                key="survey_onboarding",
                note="asked of everyone, the holdouts too; at the trial's end for the others",
            )
            b.link(activation, asked)
        if defn.surveys is not None:
            ces = b.message(
                lane,
                "survey_ces",
                f"{_hours(defn.surveys.ces_after_milestone_hours)} after the milestone",
                key="survey_ces",
            )
            b.link(milestone, ces)

    # Progress watch: nudges, support alerts, inactivity.
    stall = defn.stall
    watch = b.lane("watch", "Progress watch")
    quiet = b.node(
        watch,
        "quiet",
        "wait",
        f"No progress event for {_days(stall.days)}",
        note="progress: " + ", ".join(stall.key_events),
    )
    nudge = b.message(watch, "stall_nudge", "Nudge", note=f"at most {stall.max_nudges} per trial")
    still = b.node(
        watch, "still_quiet", "wait", f"Still nothing {_days(stall.alert_after_days)} later"
    )
    alert = b.message(watch, "support_alert", "Support alerted", note="a support task (stalled)")
    b.chain([quiet, nudge, still, alert])
    if stall.inactive_after_days is not None:
        inactive = b.node(
            watch,
            "inactive",
            "wait",
            f"Activated, then no progress for {_days(stall.inactive_after_days)}",
        )
        alert_inactive = b.message(
            watch, "inactive_alert", "Support alerted", note="a support task (inactive)"
        )
        b.link(inactive, alert_inactive)

    # The success call.
    call = defn.call
    calls = b.lane("call", "Success call")
    days = ", ".join(f"{u.replace('_', ' ')}: day {d}" for u, d in call.day_by_urgency.items())
    offer = call.offer_to
    who = "Offered a call?"
    offer_note = ""
    if offer is not None:
        offer_note = (
            f"urgency {', '.join(offer.urgency)}; personas {', '.join(offer.personas)}; "
            f"arms {', '.join(offer.arms)}"
            + ("; or any trial with a company" if offer.company else "")
        )
    decide = b.node(calls, "offer", "decision", who, note=offer_note)
    b.link(persona, decide)
    invite = b.message(
        calls,
        "call_invite",
        f"Proposed at {call.hour:%H:%M} ({days}), in an agent's free slot",
        note=f"{len(call.agents)} agents, {call.duration_minutes} min calls",
    )
    self_serve = b.message(calls, "call_self_serve", "Self-serve booking link")
    unassigned = b.message(calls, "call_unassigned", "No free slot: support told")
    b.link(decide, invite, "yes")
    b.link(decide, self_serve, "no")
    b.link(invite, unassigned, "no agent free")
    booked = b.message(calls, "call_booked", "The user books a time")
    moved = b.message(calls, "call_rescheduled", "The call is moved")
    day_before = b.message(calls, "call_reminder_day", "A day before")
    hour_before = b.message(calls, "call_reminder_hour", "An hour before")
    held = b.node(calls, "held", "event", "The call")
    b.chain([invite, day_before, hour_before, held])
    b.link(self_serve, booked)
    b.link(booked, day_before)
    b.link(moved, day_before)
    rebook = b.message(calls, "call_rebook", "No-show: book again")
    followup = b.message(calls, "call_followup", "After the call")
    b.link(held, followup, "completed")
    b.link(held, rebook, "no-show")
    if defn.surveys is not None:
        csat = b.message(
            calls,
            "survey_csat",
            f"{_hours(defn.surveys.csat_after_call_hours)} after the call",
        )
        b.link(held, csat, "completed")

    # End of trial.
    end = defn.end_of_trial
    ending = b.lane("trial_end", "End of trial")
    trial_end: list[Node | None] = []
    labels: list[str] = []
    for d in sorted(end.before_days, reverse=True):
        when = "Last day" if d == 0 else f"{_days(d)} before the end (day {defn.trial_days - d})"
        trial_end.append(b.message(ending, f"trial_ending_{d}", when))
    b.chain(trial_end, labels)
    extended = b.message(ending, "trial_extended", "Trial extended (support)")
    outcome = b.node(ending, "outcome", "decision", "Bought?")
    b.link(next((n for n in reversed(trial_end) if n is not None), None), outcome)
    b.link(extended, outcome)
    paid = b.message(ending, "welcome_paid", "Converted")
    b.link(outcome, paid, "yes")
    if defn.surveys is not None:
        referral = b.message(
            ending,
            "referral_ask",
            f"{_days(defn.surveys.referral_after_conversion_days)} after buying",
        )
        b.link(paid, referral)
    expired = b.node(ending, "expired", "end", "Trial expired")
    b.link(outcome, expired, "no")
    last = expired
    for d in sorted(end.winback_days):
        winback = b.message(ending, f"winback_{d}", f"{_days(d)} after expiry")
        b.link(last, winback)
        last = winback or last

    rest = [m for m in defn.messages if m not in b.placed]
    if rest:
        other = b.lane("other", "Other messages")
        for message in rest:
            spec = defn.messages[message]
            b.message(other, message, "At once" if spec.immediate else "In the send window")

    if defn.holdout is not None and defn.holdout.share > 0:
        notes.append(
            f"Global holdout {defn.holdout.name}: {defn.holdout.share:.0%} of the trials get no "
            "onboarding at all (transactional messages only, no call), whatever the experiment."
        )
    experiment = defn.experiment
    if experiment is not None:
        arms = ", ".join(f"{arm} {weight:g}" for arm, weight in experiment.arms.items())
        notes.append(f"Experiment {experiment.name}: arms {arms} (control: {experiment.control}).")
        if "generic" in experiment.arms:
            notes.append(
                f"generic arm: everyone follows the {experiment.generic_persona} path's messages."
            )
        if "holdout" in experiment.arms:
            notes.append("holdout arm: transactional messages only, no marketing message.")
    notes.append(
        f"Marketing messages: {defn.send_window.start:%H:%M}–{defn.send_window.end:%H:%M} in "
        f"the user's time zone, at most {defn.max_marketing_per_day} a day, never to an "
        "unsubscribed channel."
    )
    return JourneyMap(defn.version, defn.trial_days, b.lanes, b.edges, notes)


# --- Mermaid ---------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: quotes and markup characters as entities."""
    return (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


def node_caption(node: Node) -> str:
    if node.kind != "message":
        return node.label
    channels = " + ".join(CHANNEL_NAMES[c] for c in node.channels)
    return f"{node.label}: {node.message} ({channels})"


def to_mermaid(journey: JourneyMap, link: Callable[[Node], str | None] | None = None) -> str:
    """A Mermaid flowchart of the map; `link` gives a node's URL (a `click` line) if any."""
    shapes = {
        "start": ('(["', '"])'),
        "end": ('(["', '"])'),
        "message": ('("', '")'),
        "wait": ('[/"', '"/]'),
        "decision": ('{"', '"}'),
        "event": ('["', '"]'),
    }
    lines = [
        "---",
        f"title: Journey {journey.version} ({journey.trial_days}-day trial)",
        "---",
        "flowchart TD",
    ]
    clicks: list[str] = []
    for lane in journey.lanes:
        lines.append(f'  subgraph {lane.id}["{_mermaid_text(lane.title)}"]')
        for node in lane.nodes:
            left, right = shapes[node.kind]
            caption = _mermaid_text(node_caption(node))
            klass = f":::{node.category}" if node.category else ""
            lines.append(f"    {node.id}{left}{caption}{right}{klass}")
            url = link(node) if link is not None else None
            if url:
                # An empty tooltip ("") is a syntax error for Mermaid: leave it out instead.
                tip = f' "{_mermaid_text(node.note)}"' if node.note else ""
                clicks.append(f'  click {node.id} href "{url}"{tip}')
        lines.append("  end")
    for edge in journey.edges:
        arrow = f'-->|"{_mermaid_text(edge.label)}"|' if edge.label else "-->"
        lines.append(f"  {edge.source} {arrow} {edge.target}")
    lines.extend(clicks)
    lines.append("  classDef marketing fill:#fdf2fa,stroke:#c11574,color:#1f2933")
    lines.append("  classDef transactional fill:#ecfdf3,stroke:#027a48,color:#1f2933")
    return "\n".join(lines) + "\n"


# --- HTML ------------------------------------------------------------------------------------


def preview_link(base: str = "") -> Callable[[Node], str | None]:
    """Links to the template preview's card of each message (on its first channel), for the
    node's persona; `base` is the preview's address, empty for a page the preview serves."""

    def link(node: Node) -> str | None:
        if node.message is None or not node.channels:
            return None
        persona = f"?persona={node.persona}" if node.persona else ""
        return f"{base}/message/{node.channels[0]}/{node.message}{persona}"

    return link


_STYLE = """
:root { --ink: #1f2933; --muted: #6b7785; --line: #dde1e6; --brand: #3b4cca; --bg: #f4f5f7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: var(--ink); background: var(--bg); }
header.top { background: #fff; border-bottom: 1px solid var(--line); padding: 12px 20px; }
header.top h1 { font-size: 17px; margin: 0 0 4px; }
header.top p { margin: 2px 0; color: var(--muted); font-size: 12px; }
main { padding: 16px 20px 40px; }
.phase { margin: 0 0 22px; }
.phase > h2 { font-size: 15px; margin: 0 0 8px; }
.paths { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 14px;
  margin: 0 0 22px; }
.paths .phase { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 10px 12px; }
ol.flow { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 0; }
ol.flow > li { position: relative; margin: 0; padding: 0 0 18px 0; }
ol.flow > li.next::after { content: ""; position: absolute; left: 16px; bottom: 2px;
  height: 14px; border-left: 2px solid #98a2b3; }
.node { display: block; border: 1px solid var(--line); border-radius: 8px; padding: 6px 10px;
  background: #fff; text-decoration: none; color: inherit; max-width: 560px; }
a.node:hover { border-color: var(--brand); box-shadow: 0 0 0 2px #e0e4fb; }
.node:target { border-color: var(--brand); box-shadow: 0 0 0 3px #c7cdf6; }
.node.marketing { background: #fdf2fa; border-color: #f5c2e0; }
.node.transactional { background: #ecfdf3; border-color: #abefc6; }
.node.wait { border-style: dashed; }
.node.decision { background: #fffaeb; border-color: #fedf89; font-weight: 600; }
.node.start, .node.end { background: #eef0f3; border-radius: 16px; font-weight: 600; }
.node .when { font-size: 12px; color: var(--muted); display: block; }
.node .name { font-weight: 600; }
.node .chan { font-size: 11px; color: #475467; margin-left: 4px; }
.node .note { font-size: 12px; color: #475467; display: block; }
.to { font-size: 12px; color: var(--muted); margin: 2px 0 0 4px; }
.to a { color: var(--muted); }
details { margin-top: 24px; }
pre { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px;
  overflow: auto; font-size: 12px; }
"""


def _node_html(
    node: Node, url: str | None, targets: list[tuple[str, str, str]], leads_on: bool
) -> str:
    e = html.escape
    parts = []
    if node.kind == "message":
        channels = ", ".join(CHANNEL_NAMES[c] for c in node.channels)
        parts.append(f'<span class="when">{e(node.label)}</span>')
        parts.append(f'<span class="name">{e(node.message or "")}</span>')
        parts.append(f'<span class="chan">{e(channels)}</span>')
    else:
        parts.append(f'<span class="name">{e(node.label)}</span>')
    if node.note:
        parts.append(f'<span class="note">{e(node.note)}</span>')
    classes = " ".join(c for c in ("node", node.kind, node.category or "") if c)
    data = f' data-message="{e(node.message)}"' if node.message else ""
    inner = "".join(parts)
    if url:
        box = f'<a class="{classes}" id="{node.id}" href="{e(url)}"{data}>{inner}</a>'
    else:
        box = f'<div class="{classes}" id="{node.id}"{data}>{inner}</div>'
    if targets:
        links = ", ".join(
            f'<a href="#{target}">{e(title)}</a>' + (f" ({e(label)})" if label else "")
            for target, title, label in targets
        )
        box += f'<div class="to">→ {links}</div>'
    return f'<li class="next">{box}</li>' if leads_on else f"<li>{box}</li>"


def to_html(journey: JourneyMap, link: Callable[[Node], str | None] | None = None) -> str:
    """A page drawing the map: phases top to bottom, the persona paths side by side, each node
    with the arrows leaving it that do not simply go to the next node below."""
    e = html.escape
    titles = {n.id: node_caption(n) for n in journey.nodes()}
    lanes_of = {n.id: lane.id for lane in journey.lanes for n in lane.nodes}

    def section(lane: Lane) -> str:
        items = []
        for i, node in enumerate(lane.nodes):
            following = lane.nodes[i + 1].id if i + 1 < len(lane.nodes) else None
            targets = [
                (edge.target, titles[edge.target], edge.label)
                for edge in journey.edges
                if edge.source == node.id
                and not (edge.target == following and lanes_of[edge.target] == lane.id)
            ]
            leads_on = any(
                edge.source == node.id and edge.target == following for edge in journey.edges
            )
            url = link(node) if link is not None else None
            items.append(_node_html(node, url, targets, leads_on))
        persona = f' data-persona="{e(lane.persona)}"' if lane.persona else ""
        return (
            f'<section class="phase" id="lane-{lane.id}" aria-labelledby="h-{lane.id}"{persona}>'
            f'<h2 id="h-{lane.id}">{e(lane.title)}</h2><ol class="flow">{"".join(items)}</ol>'
            "</section>"
        )

    # Signup alone on top, then rows of side-by-side lanes: the persona paths, then the phases
    # everyone goes through.
    first, *rest = journey.lanes
    paths = [lane for lane in rest if lane.persona is not None]
    others = [lane for lane in rest if lane.persona is None]
    body = [section(first)]
    for row in (paths, others):
        if row:
            body.append('<div class="paths">' + "".join(section(lane) for lane in row) + "</div>")
    notes = "".join(f"<p>{e(note)}</p>" for note in journey.notes)
    mermaid = e(to_mermaid(journey, link))
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Journey {e(journey.version)}</title><style>{_STYLE}</style></head><body>"
        f'<header class="top"><h1>Journey {e(journey.version)}: '
        f"{journey.trial_days}-day trial</h1>{notes}"
        "<p>Pink: marketing (send window, daily cap, unsubscribes); green: transactional. "
        "A message links to its copy in the template preview.</p></header>"
        f"<main>{''.join(body)}"
        "<details><summary>Mermaid source (paste into a Markdown file or a wiki)</summary>"
        f"<pre>{mermaid}</pre></details></main></body></html>\n"
    )
