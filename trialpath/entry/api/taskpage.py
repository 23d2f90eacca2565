"""The support queue page, next to the dashboard: `trialpath.support.tasks` for people in a browser.

    GET  /dashboard/tasks                 the queue (`state`, `owner` filters), oldest first
    POST /dashboard/tasks/{key}/claim     form: owner
    POST /dashboard/tasks/{key}/snooze    form: hours
    POST /dashboard/tasks/{key}/close     form: outcome, note

Signed in like the dashboard (a bearer key or the session cookie), with a key whose role works
the queue (support, admin). Each form carries a token derived from the session, so a form posted
from elsewhere is refused even by a browser that would send the cookie; the page answers each
action by redirecting back with what happened (post/redirect/get). Every action is written to
the audit log under the key's name, as through the API, and a closed task's outcome is sent to
the trial's workflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Annotated, get_args
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import DictLoader, Environment, StrictUndefined
from pydantic import ValidationError

from trialpath.core.journey import TaskOutcome
from trialpath.delivery.preferences import signing_secret
from trialpath.entry.api.dashboard import COOKIE, TASKS_PAGE, authorize, html_page
from trialpath.entry.api.dashboard.templates import BASE, STYLE
from trialpath.entry.commands import TrialProblem
from trialpath.entry.trials import Trials
from trialpath.operations import audit
from trialpath.operations.access import ApiKey
from trialpath.support import tasks
from trialpath.support.tasks import ClaimTask, CloseTask, SnoozeTask, StateFilter

log = logging.getLogger("trialpath.tasks")

router = APIRouter(include_in_schema=False)

OUTCOMES: tuple[str, ...] = get_args(TaskOutcome)
STATES: tuple[str, ...] = get_args(StateFilter)
SNOOZE_HOURS = (1, 4, 24, 72)

_TASKS = """{% extends "base.html.j2" %}
{% block title %}Support queue · Trialpath{% endblock %}
{% block body %}
<form class="bar" method="get" action="/dashboard/tasks" data-testid="task-filters">
  <h1>Support queue</h1>
  <label>State <select name="state" data-testid="state">
    {% for s in states %}<option{{ ' selected' if s == state }}>{{ s }}</option>{% endfor %}
  </select></label>
  <label>Owner <input name="owner" value="{{ owner or '' }}" size="12" data-testid="owner"></label>
  <button type="submit">Show</button>
  <span class="scope" data-testid="task-count">{{ page.total }} {{ state }} task(s)</span>
  <a href="/dashboard">Growth dashboard</a>
</form>
<main>
{% if flash %}<p class="note" role="status" data-testid="flash">{{ flash }}</p>{% endif %}
{% if error %}<p class="error" role="alert" data-testid="task-error">{{ error }}</p>{% endif %}
{% if page.tasks %}
<table data-testid="tasks">
  <thead><tr><th>Opened (UTC)</th><th>User</th><th>Why</th><th>State</th><th>Owner</th>
    <th>Act</th></tr></thead>
  <tbody>
  {% for t in page.tasks %}
  <tr data-testid="task" data-key="{{ t.key }}">
    <td>{{ t.created_at.strftime('%Y-%m-%d %H:%M') }}</td>
    <td>{{ t.user_id }}<br><span class="n">{{ t.persona or '-' }} · {{ t.stage or '-' }}</span></td>
    <td><b>{{ t.kind }}</b><br><span class="n">{{ t.reason }}</span></td>
    <td>{{ t.state }}{% if t.state == 'snoozed' %}<br><span class="n">until
      {{ t.snoozed_until.strftime('%Y-%m-%d %H:%M') }}</span>{% endif %}
      {% if t.outcome %}<br><span class="n">{{ t.outcome }}</span>{% endif %}</td>
    <td>{{ t.owner or 'nobody' }}</td>
    <td>
    {% if t.state != 'closed' %}
      <form method="post" action="/dashboard/tasks/{{ t.key }}/claim" class="act">
        <input type="hidden" name="csrf" value="{{ csrf }}">
        <input name="owner" value="{{ me }}" size="10" aria-label="owner" required>
        <button type="submit" data-testid="claim">Claim</button>
      </form>
      <form method="post" action="/dashboard/tasks/{{ t.key }}/snooze" class="act">
        <input type="hidden" name="csrf" value="{{ csrf }}">
        <select name="hours" aria-label="snooze for">
          {% for h in snooze_hours %}<option value="{{ h }}">{{ h }} h</option>{% endfor %}
        </select>
        <button type="submit" class="quiet" data-testid="snooze">Snooze</button>
      </form>
      <form method="post" action="/dashboard/tasks/{{ t.key }}/close" class="act">
        <input type="hidden" name="csrf" value="{{ csrf }}">
        <select name="outcome" aria-label="outcome" data-testid="outcome">
          {% for o in outcomes %}<option>{{ o }}</option>{% endfor %}
        </select>
        <input name="note" placeholder="note" size="14" aria-label="note" maxlength="2000">
        <button type="submit" data-testid="close">Close</button>
      </form>
    {% else %}{{ t.note or '' }}{% endif %}
    </td>
  </tr>
  {% endfor %}
  </tbody>
</table>
{% else %}
<p class="note" data-testid="no-tasks">No {{ state }} tasks{{ ' for ' ~ owner if owner }}.</p>
{% endif %}
</main>
{% endblock %}
"""

_PAGE = Environment(
    loader=DictLoader({"base.html.j2": BASE, "tasks.html.j2": _TASKS}),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_PAGE.globals.update(
    style=STYLE + "form.act { display: inline-flex; gap: 4px; margin: 2px 6px 2px 0; }\n"
)


def csrf_token(request: Request, key: ApiKey) -> str:
    """Tied to the session cookie (or, for a bearer key, to the key): a form made for one
    session is refused in another."""
    session = request.cookies.get(COOKIE) or key.name
    secret = signing_secret(request.app.state.settings).encode()
    return hmac.new(secret, b"tasks-form\0" + session.encode(), hashlib.sha256).hexdigest()[:32]


@router.get(TASKS_PAGE, response_class=HTMLResponse)
async def tasks_page(
    request: Request,
    state: Annotated[str, Query()] = "active",
    owner: Annotated[str | None, Query(max_length=100)] = None,
    flash: Annotated[str | None, Query(max_length=300)] = None,
    error: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    back = f"{TASKS_PAGE}?{urlencode({'state': state})}"
    found = authorize(request, "tasks", back)
    if isinstance(found, Response):
        return found
    problem = None
    if state not in STATES:
        problem, state = f"state must be one of {', '.join(STATES)}", "active"
    service: Trials = request.app.state.trials
    page = await asyncio.to_thread(
        tasks.list_tasks,
        service.engine,
        state=state,  # type: ignore[arg-type]
        owner=owner or None,
        now=await service.clock(),
    )
    body = _PAGE.get_template("tasks.html.j2").render(
        page=page,
        state=state,
        states=STATES,
        owner=owner,
        me=owner or found.name,
        outcomes=OUTCOMES,
        snooze_hours=SNOOZE_HOURS,
        csrf=csrf_token(request, found),
        flash=flash,
        error=error or problem,
    )
    return html_page(body, 400 if problem else 200)


@router.post(TASKS_PAGE + "/{key}/{action}", response_class=HTMLResponse)
async def task_action(
    request: Request,
    key: Annotated[str, Path(max_length=300, pattern=r"^[A-Za-z0-9._:-]+$")],
    action: Annotated[str, Path(pattern="^(claim|snooze|close)$")],
) -> Response:
    found = authorize(request, "tasks", TASKS_PAGE)
    if isinstance(found, Response):
        return found
    form = {
        name: values[0]
        for name, values in parse_qs(
            (await request.body()).decode("utf-8", errors="replace")
        ).items()
    }
    if not hmac.compare_digest(form.pop("csrf", ""), csrf_token(request, found)):
        return html_page("This form expired or came from another page: reload the queue.", 403)
    service: Trials = request.app.state.trials
    engine, now = service.engine, await service.clock()
    status, user_id, message, signal_id = 200, None, "", None
    try:
        user_id = (await asyncio.to_thread(tasks.get_task, engine, key, now)).user_id
        if action == "claim":
            claimed = await asyncio.to_thread(
                tasks.claim_task, engine, key, ClaimTask.model_validate(form), now
            )
            message = f"{key} is {claimed.owner}'s."
        elif action == "snooze":
            snoozed = await asyncio.to_thread(
                tasks.snooze_task, engine, key, SnoozeTask.model_validate(form), now
            )
            until = snoozed.snoozed_until
            message = f"{key} snoozed until {until:%Y-%m-%d %H:%M} UTC." if until else ""
        else:
            command = CloseTask.model_validate({k: v for k, v in form.items() if v})
            closed = await asyncio.to_thread(tasks.close_task, engine, key, command, now)
            signal_id = closed.signal_id
            message = f"{key} closed: {command.outcome}."
    except TrialProblem as err:
        status, message = err.status, err.detail
    except ValidationError as err:
        status = 422
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
    if signal_id is not None:
        try:
            await service.deliver([signal_id])
        except Exception:  # Queued: the redelivery loop sends it once Temporal answers.
            log.warning("task_closed for %s queued for redelivery", key, exc_info=True)
    await asyncio.to_thread(
        audit.record, engine, found.name, found.role, f"task.{action}", user_id, status
    )
    outcome = {"flash": message} if status == 200 else {"error": message}
    return RedirectResponse(f"{TASKS_PAGE}?{urlencode(outcome)}", status_code=303)
