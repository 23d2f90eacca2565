"""Loading the journey definition (once per trial, at start)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from trialpath.definition import DefinitionError, JourneyDefinition, load_definition


class LoadJourneyInput(BaseModel):
    path: str | None = None
    """Overrides the configured journey file (tests, experiments)."""


class JourneyActivities:
    def __init__(self, journey_file: Path) -> None:
        self.journey_file = journey_file

    @activity.defn(name="load_journey")
    def load_journey(self, request: LoadJourneyInput) -> JourneyDefinition:
        path = Path(request.path) if request.path else self.journey_file
        try:
            return load_definition(path)
        except DefinitionError as err:
            # Retrying helps: the file is fixed by a deploy and the trial carries on.
            raise ApplicationError(str(err), type="JourneyDefinitionError") from err
