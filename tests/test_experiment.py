"""The shipped journey's experiment and surveys, end to end on the time-skipping server: arms
recorded where growth people read them, holdout gets only transactional messages, CSAT asked
after the call and answered through its signed link or the API, referral ask after purchase."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from tests.test_api import assert_problem, rows, signup
from trialpath.core.definition import load_definition
from trialpath.core.journey import assign_arm
from trialpath.operations.config import PACKAGE_DIR, Settings
from trialpath.operations.models import Message, Trial, TrialEvent

SHIPPED = load_definition(PACKAGE_DIR / "journey.toml")
ARM = SearchAttributeKey.for_keyword("ExperimentArm")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The journey exactly as shipped: experiment and surveys on."""
    return Settings(
        data_dir=tmp_path / "data",
        task_queue=f"tq-{uuid.uuid4()}",
        database_url=database_url,
        journey_file=PACKAGE_DIR / "journey.toml",
    )


def user_in(arm: str, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(1000) if assign_arm(SHIPPED, f"{prefix}-{i}") == arm)


async def start(api: httpx.AsyncClient, env: WorkflowEnvironment, user_id: str) -> None:
    response = await api.post("/v1/trials", json=signup(user_id))
    assert response.status_code == 201, response.text
    await env.sleep(timedelta(minutes=1))


def sent(settings: Settings, user_id: str) -> list[Message]:
    return [m for m in rows(settings, Message, user_id) if m.status == "sent"]


async def test_the_arm_is_recorded_and_holdout_gets_only_transactional_messages(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    holdout = user_in("holdout", "hold")
    await start(api, env, holdout)
    await env.sleep(timedelta(days=3))
    messages = sent(settings, holdout)
    assert messages, "the holdout still gets its transactional messages"
    assert {m.category for m in messages} == {"transactional"}
    # Not offered a call with an agent (`[call] offer_to`): the self-serve booking link.
    assert "call_self_serve" in {m.message for m in messages}
    assert "call_invite" not in {m.message for m in messages}
    assert "welcome" not in {m.message for m in messages}
    handle = env.client.get_workflow_handle(f"trial-{holdout}")
    assert (await handle.describe()).typed_search_attributes.get(ARM) == "holdout"
    assert rows(settings, Trial, holdout)[0].experiment_arm == "holdout"

    personalized = user_in("personalized", "pers")
    await start(api, env, personalized)
    assert "welcome" in {m.message for m in sent(settings, personalized)}
    handle = env.client.get_workflow_handle(f"trial-{personalized}")
    assert (await handle.describe()).typed_search_attributes.get(ARM) == "personalized"


async def test_csat_after_the_call_answered_by_link_then_by_api(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    user_id = user_in("personalized", "csat")
    await start(api, env, user_id)
    # The call is completed once it has taken place, not before it starts.
    call_at = datetime.fromisoformat((await api.get(f"/v1/trials/{user_id}")).json()["call"]["at"])
    await env.sleep(call_at + timedelta(minutes=40) - await env.get_current_time())
    done = await api.post(f"/v1/trials/{user_id}/call", json={"action": "completed"})
    assert done.status_code == 202, done.text
    await env.sleep(timedelta(hours=3))
    survey = [m for m in sent(settings, user_id) if m.message == "survey_csat"]
    assert {m.channel for m in survey} == {"email", "in_app"}
    email = next(m for m in survey if m.channel == "email")
    links = re.findall(r'href="([^"]*/v1/surveys/[^"?]+)\?score=(\d)"', email.html)
    assert [int(score) for _, score in links] == [1, 2, 3, 4, 5]
    path = "/v1/surveys/" + links[3][0].rsplit("/v1/surveys/", 1)[1]

    page = await api.get(f"{path}?score=4", headers={"Authorization": ""})
    assert page.status_code == 200 and "How useful was your call?" in page.text
    assert not [e for e in rows(settings, TrialEvent, user_id) if e.name == "survey_csat"]
    answer = await api.post(
        path,
        content="score=4&comment=Very+clear",
        headers={"Authorization": "", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200 and "Thank you" in answer.text
    events = [e for e in rows(settings, TrialEvent, user_id) if e.name == "survey_csat"]
    assert len(events) == 1
    assert events[0].properties == {"score": 4, "comment": "Very clear", "source": "link"}

    again: dict[str, Any] = (
        await api.post(f"/v1/trials/{user_id}/survey", json={"survey": "csat", "score": 5})
    ).json()
    assert again == {"user_id": user_id, "survey": "csat", "score": 5, "duplicate": True}
    assert_problem(
        await api.post(f"/v1/trials/{user_id}/survey", json={"survey": "csat", "score": 6}),
        422,
        "1 to 5",
    )
    ces = await api.post(f"/v1/trials/{user_id}/survey", json={"survey": "ces", "score": 6})
    assert ces.status_code == 202 and ces.json()["duplicate"] is False
    bad = await api.post(path[:-4] + "abcd", content="score=3", headers={"Authorization": ""})
    assert_problem(bad, 404, "not valid")


async def test_referral_ask_follows_the_purchase_then_the_journey_ends(
    api: httpx.AsyncClient, env: WorkflowEnvironment, settings: Settings
) -> None:
    user_id = user_in("personalized", "ref")
    await start(api, env, user_id)
    bought = await api.post(f"/v1/trials/{user_id}/conversion", json={"plan": "team", "mrr": 99})
    assert bought.status_code == 202
    await env.sleep(timedelta(hours=1))
    assert "referral_ask" not in {m.message for m in sent(settings, user_id)}
    # Three days later, at the next send-window opening in the user's time zone.
    await env.sleep(timedelta(days=5))
    status = (await api.get(f"/v1/trials/{user_id}")).json()
    assert status["stage"] == "converted"
    handle = env.client.get_workflow_handle(f"trial-{user_id}")
    description = await handle.describe()
    assert description.status is not None and description.status.name == "COMPLETED"
    referral = [m for m in sent(settings, user_id) if m.message == "referral_ask"]
    assert {m.channel for m in referral} == {"email", "in_app"}
    assert "/referrals" in next(m for m in referral if m.channel == "email").html
