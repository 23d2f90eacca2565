"""The dashboard's HTML: its style, the base template, the sign-in form and the KPI page, as
Jinja templates (`PAGES`); the support queue page extends the same base and style."""

from __future__ import annotations

from jinja2 import DictLoader, Environment, StrictUndefined

STYLE = """
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

BASE = """<!doctype html>
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

PAGES = Environment(
    loader=DictLoader(
        {"base.html.j2": BASE, "login.html.j2": _LOGIN, "dashboard.html.j2": _DASHBOARD}
    ),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
PAGES.globals.update(style=STYLE)
