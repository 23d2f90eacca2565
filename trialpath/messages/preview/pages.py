"""The preview's HTML: the Jinja page templates (base, controls bar, summary, card, gallery, one
message, problem) with their CSS and script, and the function that renders one page."""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined

from trialpath.core.definition import PERSONAS
from trialpath.messages.preview.cards import WIDTHS, Preview, View
from trialpath.messages.preview.folder import Fingerprint, template_locales
from trialpath.messages.preview.sends import CHANNEL_LABELS
from trialpath.messages.samples import SAMPLE_USERS


def page(name: str, preview: Preview, view: View, stamp: Fingerprint, **values: Any) -> str:
    return PAGES.get_template(name).render(
        view=view,
        fingerprint=stamp.digest,
        templates_dir=str(preview.templates_dir),
        personas=PERSONAS,
        locales=template_locales(preview.templates_dir),
        samples=SAMPLE_USERS.values(),
        widths=WIDTHS,
        frame_width=WIDTHS[view.width],
        labels=CHANNEL_LABELS,
        sender_name=preview.settings.product_name,
        sender_email=preview.settings.sender_email,
        support_email=preview.settings.support_email,
        max_segments=preview.settings.sms_max_segments,
        **values,
    )


_STYLE = """
:root { --ink: #1f2933; --muted: #6b7785; --line: #dde1e6; --brand: #3b4cca; --bg: #f4f5f7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: var(--ink); background: var(--bg); }
a { color: var(--brand); }
.bar { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
  padding: 10px 20px; display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center; }
.bar h1 { font-size: 16px; margin: 0 12px 0 0; }
.bar h1 a { color: inherit; text-decoration: none; }
.bar label { color: var(--muted); font-size: 12px; display: flex; gap: 6px; align-items: center; }
.bar select { font: inherit; padding: 3px 6px; border: 1px solid var(--line); border-radius: 5px;
  background: #fff; max-width: 340px; }
.toggle { display: inline-flex; border: 1px solid var(--line); border-radius: 6px;
  overflow: hidden; }
.toggle a { padding: 3px 10px; text-decoration: none; color: var(--ink); }
.toggle a.on { background: var(--brand); color: #fff; }
.summary { margin-left: auto; color: var(--muted); font-size: 12px; }
.summary .bad { color: #b42318; font-weight: 600; }
.toc { padding: 8px 20px; font-size: 12px; color: var(--muted); background: #fafbfc;
  border-bottom: 1px solid var(--line); }
.toc a { margin-right: 10px; white-space: nowrap; }
.toc a.err { color: #b42318; font-weight: 600; }
main { padding: 16px 20px 40px; }
.group { margin: 0 0 28px; }
.group > h2 { font-size: 15px; margin: 0 0 8px; display: flex; gap: 8px; align-items: baseline; }
.group > h2 .when { color: var(--muted); font-weight: 400; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px;
  min-width: 320px; max-width: 100%; box-shadow: 0 1px 2px rgba(16, 24, 40, .04); }
.card > header { display: flex; flex-wrap: wrap; gap: 6px 8px; align-items: center;
  margin-bottom: 10px; }
.channel { font-weight: 600; }
.tag { font-size: 11px; padding: 1px 7px; border-radius: 10px; background: #eef0f3;
  color: #475467; }
.tag.marketing { background: #fdf2fa; color: #c11574; }
.tag.transactional { background: #ecfdf3; color: #027a48; }
.badge { font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 10px;
  background: #fffaeb; color: #b54708; border: 1px solid #fedf89; }
.badge.locale { background: #fef3f2; color: #b42318; border-color: #fecdca; }
.file { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--muted); }
.open { margin-left: auto; font-size: 12px; }
.note { font-size: 12px; color: #475467; background: #f2f4f7; border-radius: 6px; padding: 6px 8px;
  margin: 0 0 8px; max-width: 600px; }
.error { background: #fef3f2; border: 1px solid #f04438; color: #912018; border-radius: 6px;
  padding: 10px 12px; font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace;
  white-space: pre-wrap; word-break: break-word; max-width: 600px; }
.inbox { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
  margin-bottom: 10px; max-width: 100%; }
.inbox .from { display: flex; justify-content: space-between; font-size: 13px; }
.inbox .from b { font-weight: 600; }
.inbox .from span { color: var(--muted); font-size: 12px; }
.inbox .subject { font-weight: 700; margin-top: 2px; }
.inbox .preheader { color: var(--muted); white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
iframe { display: block; border: 1px solid var(--line); border-radius: 6px; background: #fff;
  height: 520px; max-width: 100%; }
details { margin-top: 8px; max-width: 600px; }
details pre { white-space: pre-wrap; font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace;
  background: #f9fafb; border: 1px solid var(--line); border-radius: 6px; padding: 10px; }
.phone { width: 300px; background: #f2f4f7; border-radius: 22px; padding: 18px 14px; }
.bubble { background: #e5e5ea; color: #000; border-radius: 18px 18px 18px 4px; padding: 9px 13px;
  white-space: pre-wrap; word-break: break-word; font-size: 14px; }
.segments { font-size: 12px; color: var(--muted); margin-top: 8px; }
.segments.over { color: #b42318; font-weight: 600; }
.in-app { width: 340px; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
  box-shadow: 0 4px 14px rgba(16, 24, 40, .08); }
.in-app .title { font-weight: 700; margin-bottom: 6px; }
.in-app .text { white-space: pre-wrap; }
.in-app .cta { display: inline-block; margin-top: 12px; background: var(--brand); color: #fff;
  text-decoration: none; padding: 7px 14px; border-radius: 6px; font-weight: 600; }
.large { font-size: 15px; width: fit-content; }
.large .in-app, .large .phone { width: 420px; }
.problem { max-width: 640px; margin: 60px auto; background: #fff; border: 1px solid var(--line);
  border-radius: 10px; padding: 24px; }
"""

_SCRIPT = """
function fit(frame) {
  try { frame.style.height = frame.contentDocument.documentElement.scrollHeight + 2 + "px"; }
  catch (e) { /* the frame keeps its fixed height */ }
}
const events = new EventSource("/events?since=" + encodeURIComponent(FINGERPRINT));
events.addEventListener("change", () => location.reload());
"""

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{{ title }}{% endblock %}</title>
<style>{{ style|safe }}</style>
{% if fingerprint is defined %}
<script>const FINGERPRINT = {{ fingerprint|tojson }};{{ script|safe }}</script>
{% endif %}
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_BAR = """
<form class="bar" method="get" action="{{ action }}" data-testid="controls">
  <h1><a href="/?{{ view.query() }}">Message preview</a></h1>
  <a href="/journey" data-testid="journey-link">Journey map</a>
  <label>Persona
    <select name="persona" data-testid="persona-select" onchange="this.form.submit()">
    {% for p in personas %}
      <option value="{{ p }}"{{ ' selected' if p == view.persona }}>{{ p }}</option>
    {% endfor %}
    </select></label>
  <label>Locale
    <select name="locale" data-testid="locale-select" onchange="this.form.submit()">
    {% for l in locales %}
      <option value="{{ l }}"{{ ' selected' if l == view.locale }}>{{ l }}</option>
    {% endfor %}
    </select></label>
  <label>Sample user
    <select name="sample" data-testid="sample-select" onchange="this.form.submit()">
    {% for s in samples %}
      <option value="{{ s.key }}"{{ ' selected' if s == view.sample }}>{{ s.label }}</option>
    {% endfor %}
    </select></label>
  <input type="hidden" name="width" value="{{ view.width }}">
  <span class="toggle" data-testid="width-toggle">
  {% for w, px in widths.items() %}
    <a href="{{ action }}?{{ view.query(width=w) }}" data-testid="width-{{ w }}"
      class="{{ 'on' if w == view.width }}" title="{{ px }} px">{{ w|capitalize }}</a>
  {% endfor %}
  </span>
  <noscript><button type="submit">Show</button></noscript>
  {% if total is defined %}{% include "summary.html.j2" %}{% endif %}
</form>
"""

_SUMMARY = """
<span class="summary" data-testid="summary">{{ total }} cards ·
{% if errors %}
  {% set first = errors[0].send %}
  <a class="bad" href="#card-{{ first.message }}-{{ first.channel }}">
    {{- errors|length }} error{{ 's' if errors|length != 1 }}</a>
{% else %}
  no errors
{% endif %}
  · {{ fallbacks }} with fallbacks</span>
"""

_CARD = """
{% macro card_html(card, large=False) %}
{% set r = card.rendered %}
{% set send = card.send %}
<article class="card{{ ' large' if large }}" data-testid="card" id="card-{{ send.message }}-
  {{- send.channel }}" data-message="{{ send.message }}" data-channel="{{ send.channel }}"
  data-template="{{ card.template or '' }}" data-fallback="{{ 'yes' if card.fallbacks else 'no' }}"
  data-error="{{ 'yes' if card.error else 'no' }}">
  <header>
    <span class="channel">{{ labels[send.channel] }}</span>
    <span class="tag {{ send.category }}">{{ send.category }}</span>
    {% if card.template %}
    <code class="file" data-testid="template" title="{{ templates_dir }}/{{ card.template }}">
      {{- card.template }}</code>
    {% endif %}
    {% for fb in card.fallbacks %}
    <span class="badge {{ fb.kind }}" data-testid="fallback-badge" data-kind="{{ fb.kind }}">
      {{- 'fallback · ' ~ fb.text }}</span>
    {% endfor %}
    {% if not large %}<a class="open" href="{{ card.url }}">open alone</a>{% endif %}
    {% if anchors is defined and send.message in anchors %}
    <a class="open" href="/journey#{{ anchors[send.message] }}" data-testid="in-journey">
      in the journey</a>{% endif %}
  </header>
  {% if send.note %}<p class="note">{{ labels[send.channel] }} {{ send.note }}.</p>{% endif %}
  {% for note in card.notes %}<p class="note" data-testid="card-note">{{ note }}</p>{% endfor %}
  {% if card.not_sent %}
  <p class="note" data-testid="not-sent">{{ card.not_sent }}</p>
  {% elif card.error %}
  <div class="error" data-testid="render-error">{{ card.error }}</div>
  {% elif send.channel in ('email', 'support') %}
  <div class="inbox" style="width: {{ frame_width }}px">
    <div class="from"><b data-testid="sender" title="{{ sender_email }}">{{ sender_name }}</b>
      <span>to {{ support_email if send.channel == 'support' else view.sample.name }}</span></div>
    <div class="subject" data-testid="subject">{{ r.subject }}</div>
    <div class="preheader" data-testid="preheader">{{ r.preheader }}</div>
  </div>
  <iframe data-testid="email-frame" sandbox="allow-same-origin" srcdoc="{{ r.html }}"
    width="{{ frame_width }}" style="width: {{ frame_width }}px" onload="fit(this)"
    title="{{ r.subject }}"></iframe>
  <details data-testid="plain-text"><summary>Plain-text version</summary>
    <pre>{{ r.text }}</pre></details>
  {% elif send.channel == 'sms' %}
  <div class="phone">
    <div class="bubble" data-testid="sms-text">{{ r.text }}</div>
  </div>
  {% set encoding, count = card.segments %}
  <div class="segments{{ ' over' if card.over_segments }}" data-testid="sms-segments">
    {{ count }} segment{{ 's' if count != 1 }}, {{ encoding }} · {{ r.text|length }} characters
    {%- if card.over_segments %} · over the limit of {{ max_segments }}, not sent{% endif %}
  </div>
  {% else %}
  <div class="in-app">
    <div class="title" data-testid="in-app-title">{{ r.title }}</div>
    <div class="text" data-testid="in-app-text">{{ r.text }}</div>
    {% if r.cta_label %}
    <a class="cta" data-testid="in-app-cta" href="{{ r.cta_url }}" title="{{ r.cta_url }}"
      target="_blank" rel="noopener">{{ r.cta_label }}</a>
    {% endif %}
  </div>
  {% endif %}
</article>
{% endmacro %}
"""

_GALLERY = """{% extends "base.html.j2" %}
{% from "card.html.j2" import card_html with context %}
{% block title %}Messages · {{ view.persona }} · {{ view.locale }}{% endblock %}
{% block body %}
{% include "bar.html.j2" %}
<nav class="toc">
{% for group, cards in groups %}
  <a href="#msg-{{ group.message }}" class="{{ 'err' if cards|selectattr('error')|list }}">
    {{- group.message }}</a>
{% endfor %}
</nav>
<main>
{% for group, cards in groups %}
<section class="group" id="msg-{{ group.message }}" data-testid="message-group"
  data-message="{{ group.message }}">
  <h2>{{ group.message }} <span class="when">{{ group.category }} · {{ group.when }}</span></h2>
  <div class="cards">
  {% for card in cards %}{{ card_html(card) }}{% endfor %}
  </div>
</section>
{% endfor %}
</main>
{% endblock %}
"""

_MESSAGE = """{% extends "base.html.j2" %}
{% from "card.html.j2" import card_html with context %}
{% block title %}{{ card.send.message }} · {{ labels[card.send.channel] }}{% endblock %}
{% block body %}
{% include "bar.html.j2" %}
<main>
  <p><a href="/?{{ view.query() }}#card-{{ card.send.message }}-{{ card.send.channel }}">
    ← every message</a></p>
  <h2>{{ card.send.message }}</h2>
  {{ card_html(card, large=True) }}
</main>
{% endblock %}
"""

_PROBLEM = """{% extends "base.html.j2" %}
{% block body %}
<div class="problem" data-testid="problem">
  <h1>{{ status }}</h1>
  <p>{{ detail }}</p>
  <p><a href="/">Back to every message</a></p>
</div>
{% endblock %}
"""

PAGES = Environment(
    loader=DictLoader(
        {
            "base.html.j2": _BASE,
            "bar.html.j2": _BAR,
            "summary.html.j2": _SUMMARY,
            "card.html.j2": _CARD,
            "gallery.html.j2": _GALLERY,
            "message.html.j2": _MESSAGE,
            "problem.html.j2": _PROBLEM,
        }
    ),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
PAGES.globals.update(style=_STYLE, script=_SCRIPT)
