"""The growth dashboard: one HTML page of KPIs and charts, served by the API.

    GET  /dashboard          the page (`since`, `until`: ISO dates filtering trials by sign-up)
    GET  /dashboard/login    a form asking for an API key
    POST /dashboard/login    checks the key, sets the session cookie, redirects to the page
    POST /dashboard/logout   forgets the session

The page accepts `Authorization: Bearer <api key>` like the rest of the API, or a session
cookie: a signed, 12-hour value naming a fingerprint of the key used (never the key), so
removing a key from TRIALPATH_API_KEYS also ends the sessions opened with it. Only keys whose
role reads KPIs (analyst, admin) get in. Without either, a browser is sent to the form and any
other client gets a 401 problem. A key is never taken from the URL (`?key=`): URLs end up in
browser history, proxy logs and Referer headers; the page then asks for it in the form.

The cookie is `Secure` whenever the request came over HTTPS: directly, or through a TLS proxy
whose `X-Forwarded-Proto` uvicorn trusts (`TRIALPATH_FORWARDED_ALLOW_IPS`), or when
`TRIALPATH_PUBLIC_URL` is an https URL.

Charts are drawn on the server (trialpath/growth/charts.py) and inlined as SVG: the page loads no
script, font or stylesheet from anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup
from sqlalchemy import Engine

from trialpath.delivery.preferences import signing_secret
from trialpath.entry.api.problems import problem
from trialpath.growth import charts, experiments, kpis
from trialpath.growth.discover import discover
from trialpath.operations.access import ApiKey, Permission, find_key, may
from trialpath.operations.config import Settings

log = logging.getLogger("trialpath.dashboard")

COOKIE = "trialpath_dashboard"
SESSION_SECONDS = 12 * 3600
PAGE = "/dashboard"
LOGIN = "/dashboard/login"
TASKS_PAGE = "/dashboard/tasks"

router = APIRouter(include_in_schema=False)


# --- Sessions ----------------------------------------------------------------------------------


def key_id(key: str) -> str:
    """What the cookie names instead of the key: enough to tell keys apart, useless to log in."""
    return hashlib.sha256(b"trialpath-dashboard\0" + key.encode()).hexdigest()[:32]


class Sessions:
    """Signed session cookies (itsdangerous), valid 12 hours, tied to the key they came from."""

    def __init__(self, secret: str, max_age: int = SESSION_SECONDS) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="trialpath-dashboard")
        self.max_age = max_age

    def make(self, key: ApiKey) -> str:
        return str(self._serializer.dumps({"k": key_id(key.secret.get_secret_value())}))

    def key(self, cookie: str, keys: Sequence[ApiKey]) -> ApiKey | None:
        """The key the session was opened with, if it is still configured."""
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("k"), str):
            return None
        found = None
        for key in keys:
            if hmac.compare_digest(data["k"], key_id(key.secret.get_secret_value())):
                found = key
        return found


def _sessions(request: Request) -> Sessions:
    # Made once per app: the secret may live in a file of the data folder.
    sessions: Sessions | None = getattr(request.app.state, "dashboard_sessions", None)
    if sessions is None:
        sessions = Sessions(signing_secret(_settings(request)))
        request.app.state.dashboard_sessions = sessions
    return sessions


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _signed_in(request: Request, key: ApiKey, target: str) -> RedirectResponse:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        _sessions(request).make(key),
        max_age=SESSION_SECONDS,
        path=PAGE,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    log.info("dashboard session opened with key %s", key.name)
    return response


def _https(request: Request) -> bool:
    """Over HTTPS, as the browser sees it (uvicorn applies a trusted proxy's headers)."""
    return request.url.scheme == "https" or _settings(request).public_url.startswith("https:")


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


class _RedactKey(logging.Filter):
    """Keeps `?key=` out of uvicorn's access log, where the request line is written whole."""

    pattern = re.compile(r"([?&]key=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.pattern.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


_access_log = logging.getLogger("uvicorn.access")
if not any(isinstance(f, _RedactKey) for f in _access_log.filters):
    _access_log.addFilter(_RedactKey())


# --- Filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """The page's date filter as typed (`since`, `until`: whole days, both included) and as
    `kpis.Filters` (read by `kpis.make_filters`, as the CLI and `GET /v1/kpis` read theirs)."""

    since: str = ""
    until: str = ""
    filters: kpis.Filters = field(default_factory=kpis.Filters)
    error: str = ""

    @classmethod
    def parse(cls, since: str | None, until: str | None) -> Period:
        since, until = (since or "").strip(), (until or "").strip()
        try:
            filters = kpis.make_filters(since or None, until or None)
        except kpis.KpiError as err:
            return cls(since, until, error=str(err))
        return cls(since, until, filters)

    def query(self) -> str:
        values = {"since": self.since, "until": self.until}
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def filtered(self) -> bool:
        return bool(self.since or self.until)

    def describe(self) -> str:
        if self.since and self.until:
            return f"trials signed up from {self.since} to {self.until}"
        if self.since:
            return f"trials signed up since {self.since}"
        if self.until:
            return f"trials signed up until {self.until}"
        return "every trial"


def _safe_next(target: str | None) -> str:
    """Only back to the dashboard itself: the form must not redirect anywhere else."""
    if target and re.fullmatch(r"/dashboard(/tasks)?(\?[A-Za-z0-9=&%._-]*)?", target):
        return target
    return PAGE


# --- Routes ------------------------------------------------------------------------------------


@router.get(PAGE, response_class=HTMLResponse)
def dashboard(
    request: Request,
    since: str | None = None,
    until: str | None = None,
    key: str | None = None,
) -> Response:
    period = Period.parse(since, until)
    back = f"{PAGE}?{period.query()}" if period.query() else PAGE
    if key is not None:
        # Never signs in: the key is now in the browser's history and logs; say so.
        return _login_page(
            back,
            "A key in the address is not accepted (it ends up in browser history and logs): "
            "enter it here, and replace it if others may have seen it.",
            400,
        )

    found = authorize(request, "kpis", back)
    if isinstance(found, Response):
        return found
    engine: Engine = request.app.state.trials.engine
    page = render_page(engine, period, signed_in="authorization" not in request.headers)
    return _html(page, 400 if period.error else 200)


def authorize(request: Request, permission: Permission, back: str) -> ApiKey | Response:
    """The key of the request (`Authorization: Bearer`, or the session cookie) if its role
    grants `permission`; else the answer to send: a 403 problem for a refused bearer key, the
    sign-in form for a browser, a 401 problem for other clients. A signed-in support key
    sent to the KPI page goes to the support queue instead."""
    settings = _settings(request)
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, credentials = auth.partition(" ")
        found = find_key(credentials.strip(), settings.api_keys)
        if scheme.lower() != "bearer" or found is None:
            return problem(403, "Forbidden", "this API key is not accepted", request)
        if not may(found, permission):
            return problem(403, "Forbidden", _refused(found, permission), request)
        return found
    cookie = request.cookies.get(COOKIE)
    found = _sessions(request).key(cookie, settings.api_keys) if cookie else None
    if found is not None and may(found, permission):
        return found
    if found is not None and _wants_html(request):
        other = TASKS_PAGE if permission == "kpis" else PAGE
        if may(found, "tasks" if permission == "kpis" else "kpis"):
            return RedirectResponse(other, status_code=303)
    if _wants_html(request):
        response: Response = RedirectResponse(
            f"{LOGIN}?{urlencode({'next': back})}", status_code=303
        )
    else:
        response = problem(
            401,
            "Unauthorized",
            "send `Authorization: Bearer <api key>`, or sign in at /dashboard/login",
            request,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if cookie and found is None:
        response.delete_cookie(COOKIE, path=PAGE)
    return response


def _refused(key: ApiKey, permission: Permission = "kpis") -> str:
    if permission == "tasks":
        return f"the key {key.name} ({key.role}) may not work the support queue"
    return f"the key {key.name} ({key.role}) may not read KPIs (analyst or admin keys may)"


def _may_sign_in(key: ApiKey) -> bool:
    return may(key, "kpis") or may(key, "tasks")


@router.get(LOGIN, response_class=HTMLResponse)
def login_form(target: Annotated[str | None, Query(alias="next")] = None) -> HTMLResponse:
    return _login_page(_safe_next(target))


@router.post(LOGIN, response_class=HTMLResponse)
async def login(request: Request) -> Response:
    # A plain urlencoded form, read by hand: no multipart parser is needed for one field.
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    secret = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or [PAGE])[0])
    found = find_key(secret, _settings(request).api_keys) if secret else None
    if found is not None and _may_sign_in(found):
        # Where this key may go: support keys to the queue, analyst keys to the KPIs.
        if not may(found, "kpis") and not target.startswith(TASKS_PAGE):
            target = TASKS_PAGE
        elif not may(found, "tasks") and target.startswith(TASKS_PAGE):
            target = PAGE
        return _signed_in(request, found, target)
    if found is not None:
        refused = (
            f"the key {found.name} ({found.role}) may neither read KPIs nor work the support queue"
        )
        return _login_page(target, refused[0].upper() + refused[1:] + ".", 403)
    return _login_page(target, "This key is not accepted." if secret else "Enter an API key.", 403)


@router.post(f"{PAGE}/logout")
def logout() -> Response:
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(COOKIE, path=PAGE)
    return response


def _login_page(target: str, error: str = "", status: int = 200) -> HTMLResponse:
    return _html(_PAGES.get_template("login.html.j2").render(next=target, error=error), status)


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
        },
    )


# --- The page ----------------------------------------------------------------------------------


def render_page(engine: Engine, period: Period, signed_in: bool = True) -> str:
    values: dict[str, Any] = {"period": period, "signed_in": signed_in, "small_n": kpis.SMALL_N}
    if period.error:
        return _PAGES.get_template("dashboard.html.j2").render(**values)
    filters = period.filters
    funnel = kpis.funnel(engine, filters)
    funnel.pop(kpis.ALL, None)  # the chart compares personas; the cards give the totals
    figures = [
        Figure(
            "funnel",
            "Activation funnel",
            "Share of each persona's sign-ups reaching each step (each step counts only the "
            "trials that reached the ones before it); bar labels are counts.",
            charts.funnel_chart(funnel),
        ),
        Figure(
            "ttfv",
            "Time to first value",
            "Journey hours from sign-up to the persona's first-value milestone; boxes show "
            "the quartiles and median, dots every trial that reached it.",
            charts.ttfv_chart(kpis.ttfv_hours(engine, filters)),
        ),
        Figure(
            "retention",
            "Retention by cohort",
            "Share of each weekly sign-up cohort still active on or after each day; a day "
            "shows once every trial of the cohort has lived it.",
            charts.retention_chart(kpis.retention_curves(engine, filters)),
        ),
    ]
    report = experiments.experiment_report(engine, filters)
    headline = kpis.headline(engine, filters)
    return _PAGES.get_template("dashboard.html.j2").render(
        **values,
        has_trials=any(value.n for value in headline.values()),
        clock_note=clock_note(kpis.clocks(engine, filters)),
        cards=[Card.of(value) for value in headline.values()],
        figures=figures,
        experiment=[Comparison.of(row) for row in report],
        experiment_note=(
            None if report else experiments.experiment_note(experiments.arm_sizes(engine, filters))
        ),
        persona_table=PivotTable.of(kpis.compute_kpis(engine, filters, by="persona")),
        discovery=discover(engine, filters, top=5),
    )


@dataclass(frozen=True)
class Figure:
    chart: str
    title: str
    caption: str
    svg: str | None

    @property
    def markup(self) -> Markup:
        # Safe: markup matplotlib wrote from our own labels, group names and numbers.
        return Markup(self.svg or "")


LABELS = {
    "trials": "Trials",
    "time_to_first_value": "Time to first value",
    "ttfv_median": "Time to first value (median)",
    "ttfv_p90": "Time to first value (p90)",
    "activation_rate": "Activation rate",
    "onboarding_completion": "Onboarding completion",
    "adoption_rate": "Adoption rate",
    "time_to_proficiency": "Time to proficiency (median)",
    "retention_7d": "7-day retention",
    "trial_to_paid": "Trial-to-paid conversion",
    "churn_rate": "Trial churn",
    "csat": "CSAT (1–5)",
    "ces": "CES (1–7)",
    "upsell_rate": "Upsell / cross-sell",
    "referral_rate": "Referral rate",
    "cltv": "Customer lifetime value",
    "messages_per_user": "Messages per user",
    "unsubscribe_rate": "Unsubscribe rate",
    "qualifier_answer_rate": "Qualifier answered",
    "support_task_rate": "Trials needing a human",
    "support_reach_rate": "Support reached the user",
}


def label(kpi: str) -> str:
    return LABELS.get(kpi, kpi.replace("_", " ").capitalize())


def formatted(value: float | None, unit: str) -> str:
    """A KPI value as the page shows it; `—` when there is nothing to measure yet."""
    if value is None:
        return "—"
    if unit in ("%", "pts"):  # a rate, in percent (an experiment row says `pts`)
        return f"{value:.1f} %"
    if unit == "hours":
        return duration(value)
    if unit == "count":
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    if unit == "score":
        return f"{value:.2f}"
    if unit == "EUR":
        return f"€{value:,.0f}"
    return f"{value:,.2f} {unit}"


def difference(value: float | None, unit: str) -> str:
    """Arm minus control: rates in percentage points, the rest in the KPI's unit."""
    if value is None:
        return "—"
    sign = "+" if value >= 0 else "−"
    if unit in ("%", "pts"):
        return f"{sign}{abs(value):.1f} pts"
    if unit == "hours":
        return sign + duration(abs(value))
    return f"{sign}{abs(value):.2f}"


def duration(hours: float) -> str:
    """Journey hours as a person reads them: `19.2 h` up to two days, then `3.5 days`."""
    if abs(hours) < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def clock_note(seconds_per_day: list[float]) -> str | None:
    """What the durations mean when the trials ran on an accelerated clock; None in real
    time."""
    fast = [s for s in seconds_per_day if s != 86400.0]
    if not fast:
        return None
    speeds = " and ".join(f"{s:g} s" for s in fast)
    return (
        f"Durations and days are journey time: these trials ran on an accelerated clock "
        f"({speeds} of real time per journey day), and read as they would in real time."
    )


def p_value(value: float | None) -> str:
    if value is None:
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


@dataclass(frozen=True)
class Card:
    kpi: str
    label: str
    value: float | None
    shown: str
    n: int
    note: str

    @classmethod
    def of(cls, value: kpis.KpiValue) -> Card:
        reached = value.detail.get("reached")
        return cls(
            kpi=value.kpi,
            label=label(value.kpi),
            value=value.value,
            shown=formatted(value.value, value.unit),
            n=value.n,
            note=f"{reached} reached it" if reached is not None else "",
        )


@dataclass(frozen=True)
class Comparison:
    kpi: str
    label: str
    arm: str
    control: str
    value: str
    n: int
    control_value: str
    control_n: int
    difference: str
    interval: str
    p_value: str
    verdict: str
    method: str
    always_valid: str = ""
    """The always-valid interval (rates): the one to read before the planned sample is in."""
    cuped: str = ""
    """The CUPED-adjusted difference and interval, with the variance it removed."""

    @classmethod
    def of(cls, row: experiments.ArmComparison) -> Comparison:
        interval = ""
        if row.ci_low is not None and row.ci_high is not None:
            interval = f"{difference(row.ci_low, row.unit)} to {difference(row.ci_high, row.unit)}"
        always_valid = ""
        if row.always_valid_low is not None and row.always_valid_high is not None:
            always_valid = (
                f"{difference(row.always_valid_low, row.unit)} to "
                f"{difference(row.always_valid_high, row.unit)}"
            )
        adjusted = ""
        if (
            row.cuped_diff is not None
            and row.cuped_ci_low is not None
            and row.cuped_ci_high is not None
            and row.variance_reduction
        ):
            adjusted = (
                f"{difference(row.cuped_diff, row.unit)} ({difference(row.cuped_ci_low, row.unit)}"
                f" to {difference(row.cuped_ci_high, row.unit)}), "
                f"variance −{row.variance_reduction:.0%}"
            )
        return cls(
            kpi=row.kpi,
            label=label(row.kpi),
            arm=row.arm,
            control=row.control,
            value=formatted(row.value, row.unit),
            n=row.n,
            control_value=formatted(row.control_value, row.unit),
            control_n=row.control_n,
            difference=difference(row.diff, row.unit),
            interval=interval,
            p_value=p_value(row.p_value),
            verdict=row.verdict,
            method=row.method,
            always_valid=always_valid,
            cuped=adjusted,
        )


@dataclass(frozen=True)
class Cell:
    shown: str
    n: int


@dataclass(frozen=True)
class PivotTable:
    """KPIs down, groups across (`compute_kpis` gives one value per KPI and group)."""

    groups: list[str]
    rows: list[tuple[str, list[Cell | None]]]

    @classmethod
    def of(cls, values: Sequence[kpis.KpiValue]) -> PivotTable:
        groups = list(dict.fromkeys(v.group for v in values))
        cells: dict[str, dict[str, Cell]] = {}
        labels: dict[str, str] = {}
        for v in values:
            cells.setdefault(v.kpi, {})[v.group] = Cell(formatted(v.value, v.unit), v.n)
            labels[v.kpi] = label(v.kpi)
            if "monthly_churn" in v.detail:  # the CLTV's assumption, next to the figure
                labels[v.kpi] += f" (assuming {v.detail['monthly_churn']:.1%} monthly churn)"
        rows = [(labels[kpi], [by_group.get(g) for g in groups]) for kpi, by_group in cells.items()]
        return cls(groups, rows)


_STYLE = """
:root { --ink: #1f2933; --muted: #6b7785; --line: #dde1e6; --brand: #3b4cca; --bg: #f4f5f7;
  --good: #027a48; --bad: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: var(--ink); background: var(--bg); }
a { color: var(--brand); }
.bar { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
  padding: 10px 20px; display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center; }
.bar h1 { font-size: 16px; margin: 0 12px 0 0; }
.bar label { color: var(--muted); font-size: 12px; display: flex; gap: 6px; align-items: center; }
.bar input { font: inherit; padding: 3px 6px; border: 1px solid var(--line); border-radius: 5px; }
button { font: inherit; padding: 4px 12px; border: 1px solid var(--brand); border-radius: 5px;
  background: var(--brand); color: #fff; cursor: pointer; }
button.quiet { background: #fff; color: var(--brand); }
.bar .scope { color: var(--muted); font-size: 12px; }
.bar form.out { margin-left: auto; }
main { padding: 16px 20px 40px; max-width: 1400px; }
h2 { font-size: 15px; margin: 28px 0 10px; }
section:first-of-type h2 { margin-top: 4px; }
.error { background: #fef3f2; border: 1px solid #f04438; color: #912018; border-radius: 6px;
  padding: 10px 12px; max-width: 640px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px;
  box-shadow: 0 1px 2px rgba(16, 24, 40, .04); }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 26px; font-weight: 700; margin: 2px 0; }
.card .n { color: var(--muted); font-size: 12px; }
.charts { display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fit, minmax(min(560px, 100%), 1fr)); }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 12px 14px; }
figure[data-chart=retention] { grid-column: 1 / -1; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 6px; }
figcaption b { color: var(--ink); }
.empty { display: flex; align-items: center; justify-content: center; min-height: 220px;
  color: var(--muted); background: #fafbfc; border: 1px dashed var(--line); border-radius: 8px; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line);
  border-radius: 10px; overflow: hidden; min-width: 60%; }
th, td { padding: 7px 12px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: #fafbfc; font-size: 12px; color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .n { color: var(--muted); font-size: 12px; }
td.verdict { max-width: 460px; }
td.small { color: var(--muted); font-style: italic; }
caption { text-align: left; padding: 8px 12px; color: var(--muted); font-size: 12px; }
tr.first td { border-top: 2px solid var(--line); }
.note { color: var(--muted); background: #fff; border: 1px dashed var(--line); border-radius: 8px;
  padding: 12px 14px; max-width: 640px; }
.login { max-width: 420px; margin: 80px auto; background: #fff; border: 1px solid var(--line);
  border-radius: 10px; padding: 24px; }
.login h1 { font-size: 18px; margin: 0 0 14px; }
.login label { display: block; font-size: 12px; color: var(--muted); margin-bottom: 4px; }
.login input { width: 100%; font: inherit; padding: 6px 8px; border: 1px solid var(--line);
  border-radius: 5px; margin-bottom: 12px; }
.login .error { margin-bottom: 12px; }
"""

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{% block title %}{% endblock %}</title>
<style>{{ style|safe }}</style>
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_LOGIN = """{% extends "base.html.j2" %}
{% block title %}Sign in · Trialpath dashboard{% endblock %}
{% block body %}
<form class="login" method="post" action="/dashboard/login" data-testid="login-form">
  <h1>Trialpath dashboard</h1>
  {% if error %}<div class="error" role="alert" data-testid="login-error">{{ error }}</div>
  {% endif %}
  <label for="key">API key</label>
  <input id="key" name="key" type="password" autocomplete="current-password" required autofocus
    data-testid="login-key">
  <input type="hidden" name="next" value="{{ next }}">
  <button type="submit" data-testid="login-submit">Sign in</button>
</form>
{% endblock %}
"""

_DASHBOARD = """{% extends "base.html.j2" %}
{% block title %}Growth dashboard · Trialpath{% endblock %}
{% block body %}
<form class="bar" method="get" action="/dashboard" data-testid="filters">
  <h1>Growth dashboard</h1>
  <label>Signed up since <input type="date" name="since" data-testid="since"
    value="{{ period.since[:10] }}"></label>
  <label>until <input type="date" name="until" data-testid="until"
    value="{{ period.until[:10] }}"></label>
  <button type="submit">Apply</button>
  <a href="/dashboard">Clear</a>
  <span class="scope" data-testid="scope">{{ period.describe() }}</span>
  <a href="/dashboard/tasks" data-testid="tasks-link">Support queue</a>
  {% if signed_in %}
  <button class="quiet" type="submit" formmethod="post" formaction="/dashboard/logout"
    data-testid="logout">Sign out</button>
  {% endif %}
</form>
<main>
{% if period.error %}
  <p class="error" role="alert" data-testid="filter-error">{{ period.error }}</p>
{% else %}
<section aria-labelledby="h-headline">
  <h2 id="h-headline">Headline</h2>
  <div class="cards">
  {% for card in cards %}
    <div class="card" data-testid="headline-card" data-kpi="{{ card.kpi }}"
      data-value="{{ card.value if card.value is not none else '' }}" data-n="{{ card.n }}">
      <div class="label">{{ card.label }}</div>
      <div class="value" data-testid="headline-value">{{ card.shown }}</div>
      <div class="n" data-testid="headline-n">n = {{ card.n }}
        {%- if card.note %} · {{ card.note }}{% endif %}</div>
    </div>
  {% endfor %}
  </div>
  {% if clock_note %}<p class="note" data-testid="clock-note">{{ clock_note }}</p>{% endif %}
</section>

<section aria-labelledby="h-charts">
  <h2 id="h-charts">Charts</h2>
  <div class="charts">
  {% for f in figures %}
    <figure data-testid="chart" data-chart="{{ f.chart }}"
      data-empty="{{ 'yes' if f.svg is none else 'no' }}">
      {% if f.svg %}{{ f.markup }}{% else %}
      <div class="empty" data-testid="no-data">{{ f.title }}: no data yet
        {{- ' for ' ~ period.describe() if period.filtered }}.</div>
      {% endif %}
      <figcaption><b>{{ f.title }}.</b> {{ f.caption }}</figcaption>
    </figure>
  {% endfor %}
  </div>
</section>

<section aria-labelledby="h-experiment">
  <h2 id="h-experiment">Experiment</h2>
  {% if experiment %}
  <table data-testid="experiment-table">
    <caption>Each arm against the control, {{ experiment[0].control }}. The fixed 95 % interval
      holds once, at the planned sample size; the any-time one can be read every day.</caption>
    <thead><tr><th>KPI</th><th>Arm</th><th>Value</th><th>Control</th>
      <th>Difference (95 % CI)</th>
      <th title="Valid however often it is read: the one to look at before the sample is in">
        Any-time 95 % CI</th>
      <th title="Adjusted by what each user told at signup (CUPED)">Adjusted</th>
      <th>p</th><th>Verdict</th></tr></thead>
    <tbody>
    {% for row in experiment %}
      <tr data-testid="experiment-row" data-kpi="{{ row.kpi }}" data-arm="{{ row.arm }}"
        class="{{ 'first' if loop.first or loop.previtem.kpi != row.kpi }}">
        <td>{{ row.label }}</td><td>{{ row.arm }}</td>
        <td class="num">{{ row.value }} <span class="n">n={{ row.n }}</span></td>
        <td class="num">{{ row.control_value }} <span class="n">n={{ row.control_n }}</span></td>
        <td class="num" data-testid="difference">{{ row.difference }}
          {%- if row.interval %}<br><span class="n">{{ row.interval }}</span>{% endif %}</td>
        <td class="num" data-testid="always-valid">{{ row.always_valid }}</td>
        <td class="num" data-testid="cuped">{{ row.cuped }}</td>
        <td class="num" title="{{ row.method }}">{{ row.p_value }}</td>
        <td class="verdict">{{ row.verdict }}</td>
      </tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}
  <p class="note" data-testid="no-experiment">No experiment to report: {{ experiment_note }}.
  </p>
  {% endif %}
</section>

<section aria-labelledby="h-predicts">
  <h2 id="h-predicts">What predicts paying</h2>
  {% if discovery.candidates %}
  <table data-testid="candidates-table">
    <caption>Early behaviours of the {{ discovery.users }} finished trials ({{ discovery.buyers }}
      bought), ranked by the low end of the 95 % interval of the conversion difference between
      the users who showed them and the others. Correlation, not cause: test a new activation
      rule in an experiment before adopting it.</caption>
    <thead><tr><th>#</th><th>Rule</th><th>Reached</th><th>Bought if reached</th>
      <th>Of buyers</th><th>Others bought</th><th>Separation (95 % CI)</th></tr></thead>
    <tbody>
    {% for c in discovery.candidates + ([discovery.configured] if discovery.configured else []) %}
      <tr data-testid="candidate" class="{{ 'configured' if c.event is none }}">
        <td class="num">{{ c.rank }}</td><td>{{ c.rule }}</td>
        <td class="num">{{ '%.0f' % (c.share * 100) }} %
          <span class="n">n={{ c.reached }}</span></td>
        <td class="num">{{ '%.0f' % (c.precision * 100) }} %</td>
        <td class="num">{{ '%.0f' % (c.recall * 100) }} %</td>
        <td class="num">{{ '%.0f' % (c.others * 100) }} %</td>
        <td class="num">{{ '%+.0f' % (c.separation * 100) }} pts
          <br><span class="n">{{ '%+.0f' % (c.separation_ci[0] * 100) }} to
          {{ '%+.0f' % (c.separation_ci[1] * 100) }}</span></td>
      </tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}
  <p class="note" data-testid="no-candidates">Nothing to rank yet:
    {{ discovery.note or 'no rule is reached by enough users' }}.</p>
  {% endif %}
</section>

<section aria-labelledby="h-persona">
  <h2 id="h-persona">KPIs by persona</h2>
  {% if has_trials %}
  <table data-testid="persona-table">
    <thead><tr><th>KPI</th>{% for g in persona_table.groups %}<th>{{ g }}</th>{% endfor %}
    </tr></thead>
    <tbody>
    {% for name, cells in persona_table.rows %}
      <tr><td>{{ name }}</td>
      {% for cell in cells %}
        {% if cell %}
        <td class="num{{ ' small' if cell.n < small_n }}"
          {%- if cell.n < small_n %} title="fewer than {{ small_n }} users: indicative only"
          {%- endif %}>{{ cell.shown }} <span class="n">n={{ cell.n }}</span></td>
        {% else %}<td class="num">—</td>{% endif %}
      {% endfor %}
      </tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}
  <p class="note" data-testid="no-data">No trials yet
    {{- ' for ' ~ period.describe() if period.filtered }}.</p>
  {% endif %}
</section>
{% endif %}
</main>
{% endblock %}
"""

_PAGES = Environment(
    loader=DictLoader(
        {"base.html.j2": _BASE, "login.html.j2": _LOGIN, "dashboard.html.j2": _DASHBOARD}
    ),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_PAGES.globals.update(style=_STYLE)
