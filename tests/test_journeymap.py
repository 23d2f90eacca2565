"""The journey drawn: the map built from a definition, its Mermaid and HTML drawings, the CLI,
and the preview's /journey page in Chromium (messages and their cards one click apart)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_preview import (  # noqa: F401  (fixtures)
    CHROMIUM_ARGS,
    Site,
    chromium,
    server,
    site,
    tagged,
    templates,
)
from trialpath.core.definition import PERSONAS, JourneyDefinition, load_definition
from trialpath.entry.cli.main import app
from trialpath.messages.journeymap import journey_map, preview_link, to_mermaid
from trialpath.operations.config import PACKAGE_DIR, PROJECT_ROOT

MERMAID_JS = PROJECT_ROOT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"


@pytest.fixture
def shipped() -> JourneyDefinition:
    return load_definition(PACKAGE_DIR / "journey.toml")


def variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (PACKAGE_DIR / "journey.toml").read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "journey.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_every_message_and_drip_step_is_drawn_once_per_place(shipped: JourneyDefinition) -> None:
    drawn = journey_map(shipped)
    ids = [node.id for node in drawn.nodes()]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    assert {e.source for e in drawn.edges} | {e.target for e in drawn.edges} <= set(ids)
    drawn_messages = {node.message for node in drawn.nodes() if node.message}
    drip = {step.message for path in shipped.personas.values() for step in path.drip}
    assert drawn_messages == set(shipped.messages) | drip
    assert "Other messages" not in [lane.title for lane in drawn.lanes]
    for persona in PERSONAS:
        (lane,) = [lane for lane in drawn.lanes if lane.persona == persona]
        steps = [(n.label, n.message) for n in lane.nodes if n.message in drip]
        expected = sorted(shipped.personas[persona].drip, key=lambda s: s.day)
        assert steps == [(f"Day {s.day}", s.message) for s in expected]
    # The waits between drip steps are the day gaps: 1, 1, 2, 3, 3 for days 1, 2, 4, 7, 10.
    business = [
        e.label for e in drawn.edges if e.label.startswith("wait") and "business" in e.source
    ]
    assert business == ["wait 1 day", "wait 1 day", "wait 2 days", "wait 3 days", "wait 3 days"]


def test_the_definition_not_the_code_says_what_is_drawn(tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        '{ message = "drip_automate", day = 4 },',
        '{ message = "drip_automate", day = 5, skip_if = ["workflow_created"] },',
    )
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "[messages]\n",
            '[messages]\nspring_offer = { channels = ["email"], category = "marketing" }\n',
        ),
        encoding="utf-8",
    )
    drawn = journey_map(load_definition(path))
    (automate,) = drawn.message_nodes("drip_automate")
    assert automate.label == "Day 5"
    assert automate.note == "skipped if the user already did workflow_created"
    # A message no phase knows is drawn anyway, not hidden.
    (other,) = [lane for lane in drawn.lanes if lane.title == "Other messages"]
    assert [n.message for n in other.nodes] == ["spring_offer"]


def test_mermaid_declares_each_node_once_and_escapes_labels(shipped: JourneyDefinition) -> None:
    drawn = journey_map(shipped)
    text = to_mermaid(drawn, preview_link("http://127.0.0.1:8090"))
    assert "flowchart TD" in text
    declared = re.findall(r"^    (\w+)[\(\[\{]", text, flags=re.M)
    assert sorted(declared) == sorted(n.id for n in drawn.nodes())
    # Reserved words are never ids (a subgraph called `end` breaks Mermaid).
    assert not re.search(r"subgraph end\b", text)
    assert '"' not in "".join(re.findall(r'\("([^\n]*)"\)', text)).replace("#quot;", "")
    assert (
        'click msg_path_business_drip_invite_team href "http://127.0.0.1:8090/message/email/'
        'drip_invite_team?persona=business"'
    ) in text


def test_the_cli_draws_as_text_mermaid_and_html(tmp_path: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["journey", "show"])
    assert text.exit_code == 0, text.output
    assert "drip_first_workflow" in text.output and "End of trial" in text.output
    mermaid = runner.invoke(app, ["journey", "show", "--format", "mermaid"])
    assert mermaid.exit_code == 0 and mermaid.stdout.startswith("---\ntitle: Journey")
    out = tmp_path / "journey.html"
    page = runner.invoke(
        app,
        ["journey", "show", "--format", "html", "--out", str(out), "--preview-url", "http://x:1/"],
    )
    assert page.exit_code == 0, page.output
    html = out.read_text(encoding="utf-8")
    assert 'href="http://x:1/message/email/drip_first_workflow?persona=business"' in html
    assert "<script" not in html

    bad = runner.invoke(app, ["journey", "show", "--format", "svg"])
    assert bad.exit_code == 2 and "--format must be text, mermaid or html" in bad.output
    broken = variant(tmp_path, "trial_days = 14", "trial_days = -1")
    refused = runner.invoke(app, ["journey", "show", "--journey", str(broken)])
    assert refused.exit_code == 2 and "trial_days" in refused.output
    assert "Traceback" not in refused.output


async def test_the_preview_links_cards_and_map_both_ways(site: Site) -> None:  # noqa: F811
    page = await site.get("/journey")
    assert page.status_code == 200
    assert 'href="/message/email/drip_invite_team?persona=business"' in page.text
    gallery = await site.get("/", persona="executive")
    links = {a["href"] for a in tagged(gallery.text, "in-journey")}
    assert "/journey#msg_path_executive_drip_roi_calculator" in links
    assert "/journey#msg_path_executive_activated" in links  # the executive's, not another path's
    assert "/journey#msg_trial_end_welcome_paid" in links
    for href in links:
        assert f'id="{href.split("#")[1]}"' in page.text


@pytest.mark.takes(seconds=15)
def test_in_chromium_the_map_renders_and_leads_to_the_copy(
    chromium: Path,  # noqa: F811
    server: str,  # noqa: F811
    shipped: JourneyDefinition,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{server}/journey")
            paths = page.locator(".paths > section[data-persona]")
            expect(paths).to_have_count(3)
            # Side by side: the three persona paths share a row.
            tops = {round(paths.nth(i).bounding_box()["y"]) for i in range(3)}  # type: ignore[index]
            assert len(tops) == 1, tops
            node = page.locator("#msg_path_technical_drip_webhooks")
            expect(node).to_contain_text("Day 4")
            node.click()
            expect(page.locator('[data-testid=card][data-message="drip_webhooks"]')).to_be_visible()
            page.get_by_test_id("in-journey").first.click()
            expect(page.locator(":target")).to_have_attribute("data-message", "drip_webhooks")

        finally:
            browser.close()


@pytest.mark.takes(seconds=8)
def test_mermaid_itself_renders_the_flowchart(
    chromium: Path,  # noqa: F811
    shipped: JourneyDefinition,
) -> None:
    """Mermaid's own renderer (npm, installed by `make test` with the contract mocks) draws one
    box per node: a syntax Mermaid refuses, or a node it cannot place, fails here."""
    from playwright.sync_api import sync_playwright

    if not MERMAID_JS.exists():
        reason = f"{MERMAID_JS} is missing: `make test` installs it with npm"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    drawn = journey_map(shipped)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_content("<!doctype html><body></body>")
            page.add_script_tag(path=str(MERMAID_JS))
            svg = page.evaluate(
                "async (text) => { mermaid.initialize({startOnLoad: false});"
                " return (await mermaid.render('journey', text)).svg; }",
                to_mermaid(drawn, preview_link("http://127.0.0.1:8765")),
            )
        finally:
            browser.close()
    assert svg.count('class="node ') == len(list(drawn.nodes()))
    assert svg.count('class="cluster"') == len(drawn.lanes)
    assert "drip_invite_team" in svg and "Syntax error" not in svg
