"""`trialpath templates check`: the real templates pass; a copy broken in one way per file
shows each problem at its file and line, and nothing else."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trialpath.core.definition import load_definition
from trialpath.entry.cli.main import app
from trialpath.messages.template_check import CheckReport, Finding, check_templates, href_problem
from trialpath.messages.templating import Product
from trialpath.operations.config import PACKAGE_DIR, PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "templates"
DEFN = load_definition(PACKAGE_DIR / "journey.toml")
PRODUCT = Product("Acme", "https://app.acme.test", "1 rue de la Paix, Paris", "help@acme.test")
TRIALPATH = str(Path(sys.executable).parent / "trialpath")

# A 110 KB comment: invisible, but it counts toward Gmail's 102 KB limit all the same.
PADDING = "<!-- " + "x" * 110_000 + " -->"
LONG_FR_SMS = (
    " Vous êtes à deux pas de tout garder : vos workflows, vos intégrations, vos tableaux de"
    " bord et toute votre équipe. Répondez à ce message pour la moindre question."
)


def check(folder: Path) -> CheckReport:
    return check_templates(folder, DEFN, product=PRODUCT, public_url="https://api.acme.test")


def edit(folder: Path, name: str, old: str, new: str) -> int:
    """Replaces the first `old` in a template; returns the line it was on."""
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{name} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def found(report: CheckReport, severity: str, file: str) -> list[Finding]:
    return [f for f in report.findings if f.severity == severity and f.file == file]


def one(report: CheckReport, severity: str, file: str, *words: str) -> Finding:
    matches = [f for f in found(report, severity, file) if all(w in f.message for w in words)]
    assert len(matches) == 1, (
        f"expected one {severity} in {file} with {words}, got {found(report, severity, file)}"
    )
    return matches[0]


@pytest.fixture(scope="module")
def real() -> CheckReport:
    started = time.perf_counter()
    report = check(TEMPLATES)
    print(f"\n{report.summary()} in {time.perf_counter() - started:.2f} s")
    for warning in report.warnings:
        print(warning)
    return report


# Each kind of mistake in its own file, so one check run shows them all. `LINES` records the
# line of each edit.
LINES: dict[str, int] = {}


@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("templates") / "templates"
    shutil.copytree(TEMPLATES, folder)
    name = "email/activated.business.en.html.j2"
    LINES[name] = edit(folder, name, "Hi {{ user.first_name }},", "Hi {{ user.first_name },")
    name = "email/welcome.business.en.html.j2"
    LINES[name] = edit(folder, name, "Hi {{ user.first_name }},", "Hi {{ user.frist_name }},")
    name = "email/stall_nudge.business.en.html.j2"
    LINES[name] = edit(folder, name, 'subject: "{{ user.first_name }}', 'subject: "{{ user.nmae }}')
    name = "email/activated.technical.en.html.j2"
    LINES[name] = edit(
        folder,
        name,
        "Hi {{ user.first_name }},",
        'Hi {{ user.first_name }},{% if trial.plan == "enterprise" %} {{ trial.plam }}{% endif %}',
    )
    name = "in_app/trial_extended.default.en.txt.j2"
    LINES[name] = edit(folder, name, "Good news,", "{{ alert.reason }} Good news,")
    name = "in_app/trial_extended.default.fr.txt.j2"
    LINES[name] = edit(folder, name, "'technical' %}/integrations", "'technical' %}integrations")
    edit(folder, "email/winback_10.default.en.html.j2", "subject:", "description:")
    # A marketing email that does not extend the layout loses its footer and unsubscribe link.
    name = "email/winback_3.default.fr.html.j2"
    edit(folder, name, '{% extends "email/_base.html.j2" %}', "<!doctype html><html><body>")
    edit(folder, name, "{% block body %}", "")
    edit(folder, name, "{% endblock %}", "</body></html>")
    name = "email/trial_ending_1.business.en.html.j2"
    LINES[name] = edit(folder, name, "category: marketing", "category: transactional")
    name = "email/drip_webhooks.technical.en.html.j2"
    LINES[name] = edit(folder, name, "{{ link('/docs/webhooks') }}", "{{ links.nonexistent }}")
    name = "email/drip_reporting.executive.en.html.j2"
    LINES[name] = edit(folder, name, "{{ link('/reports') }}", "/reports")
    name = "email/drip_api_quickstart.technical.en.html.j2"
    LINES[name] = edit(folder, name, "link('/docs/quickstart')", "link('docs/quickstart')")
    name = "sms/trial_ending_0.default.fr.txt.j2"
    edit(folder, name, "STOP pour vous désabonner", "STOP pour vous désabonner" + LONG_FR_SMS)
    name = "sms/call_reminder_hour.default.en.txt.j2"
    LINES[name] = edit(folder, name, "starts at", "starts at {{ call.time }}, and you’ll get it")
    edit(
        folder,
        "email/call_followup.default.en.html.j2",
        "{% endblock %}",
        PADDING + "{% endblock %}",
    )
    edit(
        folder,
        "email/call_rebook.default.en.html.j2",
        "{% endblock %}",
        PADDING[:85_000] + " -->{% endblock %}",
    )
    (folder / "in_app/welcome_paid.default.en.txt.j2").unlink()
    name = "in_app/milestone.technical.en.txt.j2"
    LINES[name] = edit(folder, name, "category: transactional", "category: marketing")
    name = "email/call_booked.default.en.html.j2"
    LINES[name] = edit(folder, name, 'preheader: "', "preheader: Note: ")
    name = "in_app/activated.default.en.txt.j2"
    LINES[name] = edit(folder, name, "cta_label:", "cta_lable: Go\ncta_label:")
    (folder / "email/drip_automate.business.fr.html.j2").unlink()
    # A card sent before its email (unless_read_hours) that lost its button.
    name = "in_app/drip_roi_calculator.executive.en.txt.j2"
    edit(folder, name, 'cta_label: "Calculate your ROI"\n', "")
    shutil.copy(
        folder / "email/welcome_paid.default.en.html.j2", folder / "email/welcom.default.en.html.j2"
    )
    # A marketer starts a German translation: German becomes a locale the check renders.
    shutil.copy(
        folder / "in_app/welcome_paid.default.fr.txt.j2",
        folder / "in_app/welcome_paid.default.de.txt.j2",
    )
    return folder


@pytest.fixture(scope="module")
def broken(broken_dir: Path) -> CheckReport:
    return check(broken_dir)


def test_the_real_templates_pass(real: CheckReport) -> None:
    assert real.errors == [], "\n".join(map(str, real.errors))
    assert real.ok
    assert real.templates == len(list(TEMPLATES.rglob("*.j2")))
    # Every journey message x persona x locale x sample user (SMS only for users with a phone).
    assert real.rendered > 700


def test_only_the_broken_files_have_errors(broken: CheckReport) -> None:
    assert {f.file for f in broken.errors} == {
        "email/activated.business.en.html.j2",
        "email/welcome.business.en.html.j2",
        "email/stall_nudge.business.en.html.j2",
        "email/activated.technical.en.html.j2",
        "in_app/trial_extended.default.en.txt.j2",
        "in_app/trial_extended.default.fr.txt.j2",
        "email/winback_10.default.en.html.j2",
        "email/winback_3.default.fr.html.j2",
        "email/trial_ending_1.business.en.html.j2",
        "email/drip_webhooks.technical.en.html.j2",
        "email/drip_reporting.executive.en.html.j2",
        "email/drip_api_quickstart.technical.en.html.j2",
        "sms/trial_ending_0.default.fr.txt.j2",
        "email/call_followup.default.en.html.j2",
        "in_app/welcome_paid.default.en.txt.j2",
        "in_app/milestone.technical.en.txt.j2",
        "email/call_booked.default.en.html.j2",
    }
    assert not broken.ok


def test_syntax_error(broken: CheckReport) -> None:
    name = "email/activated.business.en.html.j2"
    finding = one(broken, "error", name, "Jinja cannot read this line", "`}}`")
    assert finding.line == LINES[name]
    assert str(finding).startswith(f"error: {name}:{LINES[name]}: Jinja cannot read")


def test_typo_in_a_variable_suggests_the_right_one(broken: CheckReport) -> None:
    name = "email/welcome.business.en.html.j2"
    finding = one(broken, "error", name, "`user.frist_name` does not exist")
    assert "(did you mean `user.first_name`?)" in finding.message
    assert finding.line == LINES[name]
    # In the subject: the line of the front matter key.
    name = "email/stall_nudge.business.en.html.j2"
    finding = one(broken, "error", name, "`user.nmae` does not exist", "`user.name`")
    assert finding.line == LINES[name] == 2


def test_typo_in_a_branch_no_sample_user_reaches(broken: CheckReport) -> None:
    name = "email/activated.technical.en.html.j2"
    finding = one(broken, "error", name, "`trial.plam`", "did you mean `trial.plan`")
    assert finding.line == LINES[name]


def test_variable_not_filled_for_this_message(broken: CheckReport) -> None:
    name = "in_app/trial_extended.default.en.txt.j2"
    finding = one(broken, "error", name, "`alert.reason` is only filled in support alerts")
    assert finding.line == LINES[name]
    assert "sample user" in finding.context and "locale en" in finding.context


def test_missing_subject(broken: CheckReport) -> None:
    name = "email/winback_10.default.en.html.j2"
    one(broken, "error", name, "no `subject:`")
    assert len(found(broken, "error", name)) == 1, "reported twice"


def test_marketing_email_without_unsubscribe_link(broken: CheckReport) -> None:
    name = "email/winback_3.default.fr.html.j2"
    finding = one(broken, "error", name, "marketing email without an unsubscribe link")
    assert "locale fr" in finding.context


def test_category_disagreeing_with_the_journey(broken: CheckReport) -> None:
    name = "in_app/milestone.technical.en.txt.j2"
    finding = one(broken, "error", name, "`category: marketing` disagrees with the journey")
    assert finding.line == LINES[name] == 3
    assert "transactional" in finding.message
    # A marketing email marked transactional also loses the layout's unsubscribe link.
    name = "email/trial_ending_1.business.en.html.j2"
    assert one(broken, "error", name, "disagrees with the journey").line == LINES[name]
    one(broken, "error", name, "without an unsubscribe link")


def test_broken_links(broken: CheckReport) -> None:
    name = "email/drip_webhooks.technical.en.html.j2"
    finding = one(broken, "error", name, "`links.nonexistent` does not exist")
    assert finding.line == LINES[name]
    name = "email/drip_reporting.executive.en.html.j2"
    finding = one(broken, "error", name, 'broken link href="/reports"', "not a full address")
    assert finding.line == LINES[name]
    name = "email/drip_api_quickstart.technical.en.html.j2"
    finding = one(broken, "error", name, "`docs/quickstart` must start with `/`")
    assert finding.line == LINES[name]
    # A path computed in the front matter is checked once rendered (technical users only).
    name = "in_app/trial_extended.default.fr.txt.j2"
    finding = one(broken, "error", name, "`cta_path`", "`integrations` must start with `/`")
    assert finding.line == LINES[name] == 5
    assert "persona technical" in finding.context


def test_href_rules() -> None:
    assert href_problem("https://app.acme.test/docs?utm_source=x") is None
    assert href_problem("mailto:help@acme.test") is None
    assert "empty" in (href_problem("") or "")
    assert "`None`" in (href_problem("https://app.acme.test/None") or "")
    assert "`{{`" in (href_problem("https://x.test/{{ user }}") or "")
    assert "space" in (href_problem("https://x.test/a b") or "")
    assert "not a full address" in (href_problem("app.acme.test/docs") or "")
    assert "not a full address" in (href_problem("#top") or "")


def test_sms_over_the_segment_limit(broken: CheckReport) -> None:
    name = "sms/trial_ending_0.default.fr.txt.j2"
    finding = one(broken, "error", name, "segments long (UCS-2", "more than the 3 allowed")
    assert "locale fr" in finding.context


def test_curly_apostrophe_in_an_sms_is_a_warning(broken: CheckReport) -> None:
    name = "sms/call_reminder_hour.default.en.txt.j2"
    finding = one(broken, "warning", name, "`’`", "UCS-2", "use `'` instead")
    assert finding.line == LINES[name]
    assert found(broken, "error", name) == []


def test_html_size(broken: CheckReport) -> None:
    one(broken, "error", "email/call_followup.default.en.html.j2", "110 KB", "Gmail")
    one(broken, "warning", "email/call_rebook.default.en.html.j2", "KB", "Gmail")
    assert found(broken, "error", "email/call_rebook.default.en.html.j2") == []


def test_message_without_any_template(broken: CheckReport) -> None:
    name = "in_app/welcome_paid.default.en.txt.j2"
    one(broken, "error", name, "the journey sends `welcome_paid`", "no template")


def test_front_matter_that_is_not_valid_yaml(broken: CheckReport) -> None:
    name = "email/call_booked.default.en.html.j2"
    finding = one(broken, "error", name, "front matter is not valid", "double quotes")
    assert finding.line == LINES[name] == 3


def test_unknown_front_matter_key_is_only_a_warning(broken: CheckReport) -> None:
    name = "in_app/activated.default.en.txt.j2"
    finding = one(broken, "warning", name, "unknown front matter key `cta_lable`")
    assert "did you mean `cta_label`" in finding.message
    assert finding.line == LINES[name]
    assert found(broken, "error", name) == []


def test_a_card_sent_before_its_email_without_a_button_is_a_warning(broken: CheckReport) -> None:
    name = "in_app/drip_roi_calculator.executive.en.txt.j2"
    one(broken, "warning", name, "goes in-app first", "no `cta_label:`")
    assert found(broken, "error", name) == []


def test_missing_translation_and_unused_file_are_warnings(broken: CheckReport) -> None:
    one(
        broken,
        "warning",
        "email/drip_automate.business.en.html.j2",
        "no French version: French users get the English text",
    )
    one(broken, "warning", "email/welcom.default.en.html.j2", "not used", "`welcome`")


def test_a_new_locale_folder_is_rendered_too(broken: CheckReport, real: CheckReport) -> None:
    one(
        broken,
        "warning",
        "email/welcome.business.en.html.j2",
        "no German version: German users get the English text",
    )
    # Three locales instead of two (less the renders of the files broken on purpose).
    assert broken.rendered > real.rendered * 1.4


def test_findings_are_reported_once(broken: CheckReport) -> None:
    keys = [(f.file, f.line, f.message) for f in broken.findings]
    assert len(keys) == len(set(keys))


# --- the command line ------------------------------------------------------------------------


def test_cli_passes_on_the_real_templates() -> None:
    """As `make test` runs it: the installed script, the real folder."""
    done = subprocess.run(
        [TRIALPATH, "templates", "check"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"Checked \d+ renders of \d+ templates: 0 errors, \d+ warnings?", summary)


def test_cli_fails_on_a_broken_copy(broken_dir: Path) -> None:
    result = CliRunner().invoke(app, ["templates", "check", "--templates-dir", str(broken_dir)])
    assert result.exit_code == 1, result.output
    name = "email/welcome.business.en.html.j2"
    line = next(x for x in result.output.splitlines() if x.startswith(f"error: {name}:"))
    assert line.startswith(f"error: {name}:{LINES[name]}: the variable `user.frist_name`")
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("Checked ") and " errors, " in summary


def test_cli_json(broken_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["templates", "check", "--templates-dir", str(broken_dir), "--json"]
    )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["errors"] == len(
        [f for f in data["findings"] if f["severity"] == "error"]
    )
    assert {
        "severity": "error",
        "file": "in_app/milestone.technical.en.txt.j2",
        "line": 3,
        "message": "`category: marketing` disagrees with the journey, which sends `milestone` "
        "as transactional (write `category: transactional`)",
        "context": "",
    } in data["findings"]


def test_cli_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["templates", "check", "--templates-dir", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 2
    # The message wraps at the terminal's width, wherever the folder's path ends.
    assert "does not exist" in " ".join(result.output.split())
    assert "Traceback" not in result.output
