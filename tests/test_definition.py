"""Validation of the journey definition (`trialpath.core.definition`): pure, no Temporal."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from trialpath.core.definition import (
    REQUIRED_MESSAGES,
    DefinitionError,
    JourneyDefinition,
    MessageSpec,
    load_definition,
)
from trialpath.operations.config import PACKAGE_DIR

JOURNEY_FILE = PACKAGE_DIR / "journey.toml"
DATA: dict[str, Any] = tomllib.loads(JOURNEY_FILE.read_text(encoding="utf-8"))


def test_default_journey_loads() -> None:
    defn = load_definition(JOURNEY_FILE)
    assert defn.version == "2026-11-25"
    assert (defn.trial_days, defn.qualifier_timeout_hours) == (14, 1.0)
    assert (defn.default_persona, defn.default_urgency) == ("business", "evaluating")
    assert (defn.send_window.start, defn.send_window.end) == (time(9), time(18))
    assert defn.max_marketing_per_day == 1
    assert set(defn.personas) == {"technical", "business", "executive"}
    assert defn.personas["technical"].activation.require == {
        "integration_connected": 1,
        "api_call": 10,
    }
    assert defn.call.day_by_urgency == {"this_week": 2, "this_month": 4, "evaluating": 7}
    assert defn.end_of_trial.before_days == (3, 1, 0)
    assert set(REQUIRED_MESSAGES) <= set(defn.messages)


def test_checklist_and_in_app_first_steps() -> None:
    defn = load_definition(JOURNEY_FILE)
    assert defn.checklist["integration_connected"].label == "Connect an integration"
    assert defn.checklist["integration_connected"].path == "/integrations"
    roi = defn.message("drip_roi_calculator")
    assert (roi.channels, roi.unless_read_hours) == (("email", "in_app"), 24)
    assert defn.message("drip_reporting").unless_read_hours is None
    # Every activation requirement and milestone has a label of its own.
    steps = {e for p in defn.personas.values() for e in (*p.activation.require, p.milestone)}
    assert steps <= set(defn.checklist)


def test_message_lookup() -> None:
    defn = JourneyDefinition.model_validate(DATA)
    assert defn.message("welcome") == MessageSpec(
        channels=("email", "in_app"), category="marketing", immediate=True
    )
    # A drip step is a marketing message on its step's channels (in-app first if it says so).
    assert defn.message("drip_reporting") == MessageSpec(
        channels=("email", "in_app"), category="marketing"
    )
    assert defn.message("drip_roi_calculator") == MessageSpec(
        channels=("email", "in_app"), category="marketing", unless_read_hours=24
    )
    with pytest.raises(KeyError, match="unknown message 'nope'"):
        defn.message("nope")


def test_definition_is_frozen() -> None:
    defn = JourneyDefinition.model_validate(DATA)
    with pytest.raises(ValidationError, match="frozen"):
        defn.trial_days = 30  # type: ignore[misc]


def _drop_persona(data: dict[str, Any]) -> None:
    del data["personas"]["executive"]


def _window_backwards(data: dict[str, Any]) -> None:
    data["send_window"] = {"start": "18:00", "end": "09:00"}


def _window_empty(data: dict[str, Any]) -> None:
    data["send_window"] = {"start": "09:00", "end": "09:00"}


def _require_empty(data: dict[str, Any]) -> None:
    data["personas"]["business"]["activation"]["require"] = {}


def _require_zero(data: dict[str, Any]) -> None:
    data["personas"]["business"]["activation"]["require"] = {"workflow_created": 0}


def _drop_welcome(data: dict[str, Any]) -> None:
    del data["messages"]["welcome"]


def _drop_winback(data: dict[str, Any]) -> None:
    del data["messages"]["winback_10"]


def _new_before_day(data: dict[str, Any]) -> None:
    data["end_of_trial"]["before_days"] = [7, 3, 1, 0]


def _drop_urgency(data: dict[str, Any]) -> None:
    del data["call"]["day_by_urgency"]["evaluating"]


def _unknown_key(data: dict[str, Any]) -> None:
    data["stall"]["dayz"] = 3


def _no_agents(data: dict[str, Any]) -> None:
    data["call"]["agents"] = []


def _bad_persona(data: dict[str, Any]) -> None:
    data["default_persona"] = "developer"


def _checklist_path_elsewhere(data: dict[str, Any]) -> None:
    data["checklist"]["api_call"]["path"] = "//evil.example/phish"


def _checklist_label_empty(data: dict[str, Any]) -> None:
    data["checklist"]["api_call"]["label"] = ""


def _unless_read_without_in_app(data: dict[str, Any]) -> None:
    step = data["personas"]["executive"]["drip"][3]
    step["unless_read_hours"], step["channels"] = 24, ["email"]


def _drip_out_of_order(data: dict[str, Any]) -> None:
    data["personas"]["executive"]["drip"][4]["day"] = 3  # drip_reporting, after day 7


def _drip_twice(data: dict[str, Any]) -> None:
    drip = data["personas"]["business"]["drip"]
    drip.append({**drip[-1], "day": 12})


def _unless_read_message_alone(data: dict[str, Any]) -> None:
    data["messages"]["activated"]["unless_read_hours"] = 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_checklist_path_elsewhere, "a checklist path starts with /"),
        (_checklist_label_empty, "checklist.api_call.label"),
        (
            _unless_read_without_in_app,
            "drip step drip_roi_calculator: unless_read_hours needs in_app",
        ),
        (_unless_read_message_alone, "unless_read_hours"),
        (
            _drip_out_of_order,
            r"drip steps go in the order of their days: drip_reporting \(day 3\) is listed "
            r"after drip_roi_calculator \(day 7\)",
        ),
        (_drip_twice, "a drip step is listed twice: drip_team_collaboration"),
        (_drop_persona, r"personas lacks \['executive'\]"),
        (_window_backwards, "send_window.end must be after send_window.start"),
        (_window_empty, "send_window.end must be after send_window.start"),
        (_require_empty, "activation.require needs at least one event with a count >= 1"),
        (_require_zero, "activation.require needs at least one event with a count >= 1"),
        (_drop_welcome, r"messages lacks \['welcome'\]"),
        (_drop_winback, r"messages lacks \['winback_10'\]"),
        (_new_before_day, r"messages lacks \['trial_ending_7'\]"),
        (_drop_urgency, r"call.day_by_urgency lacks \['evaluating'\]"),
        (_unknown_key, "dayz"),
        (_no_agents, "agents"),
        (_bad_persona, "default_persona"),
    ],
)
def test_invalid_definition(change: Callable[[dict[str, Any]], None], message: str) -> None:
    data = copy.deepcopy(DATA)
    change(data)
    with pytest.raises(ValidationError, match=message):
        JourneyDefinition.model_validate(data)


def test_invalid_file_raises_definition_error_naming_the_problem(tmp_path: Path) -> None:
    text = JOURNEY_FILE.read_text(encoding="utf-8").replace(
        "day_by_urgency = { this_week = 2, this_month = 4, evaluating = 7 }",
        "day_by_urgency = { this_week = 2, this_month = 4 }",
    )
    path = tmp_path / "journey.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DefinitionError, match="is invalid") as info:
        load_definition(path)
    assert "call.day_by_urgency lacks ['evaluating']" in str(info.value)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, ValidationError)


def test_missing_file_raises_definition_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(DefinitionError, match="does not exist") as info:
        load_definition(path)
    assert str(path) in str(info.value)


def test_invalid_toml_raises_definition_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('version = "1"\ntrial_days = = 14\n', encoding="utf-8")
    with pytest.raises(DefinitionError, match="is not valid TOML"):
        load_definition(path)


def test_definition_error_is_a_value_error() -> None:
    assert issubclass(DefinitionError, ValueError)
