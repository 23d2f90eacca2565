"""Loading the journey definition (once per trial, at start), and its stored version."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from trialpath.core.contract import JourneyVersionRef
from trialpath.core.definition import DefinitionError, JourneyDefinition, load_definition
from trialpath.operations.versions import register


class LoadJourneyInput(BaseModel):
    path: str | None = None
    """Overrides the configured journey file (tests, experiments)."""


class LoadedJourney(BaseModel):
    definition: JourneyDefinition
    version: JourneyVersionRef


class JourneyActivities:
    def __init__(self, journey_file: Path, engine: Engine | None = None) -> None:
        self.journey_file = journey_file
        self.engine = engine

    def _load(self, request: LoadJourneyInput) -> tuple[Path, JourneyDefinition]:
        path = Path(request.path) if request.path else self.journey_file
        try:
            return path, load_definition(path)
        except DefinitionError as err:
            # Retrying helps: the file is fixed by a deploy and the trial carries on.
            raise ApplicationError(str(err), type="JourneyDefinitionError") from err

    @activity.defn(name="load_journey")
    def load_journey(self, request: LoadJourneyInput) -> JourneyDefinition:
        return self._load(request)[1]

    @activity.defn(name="load_journey_version")
    def load_journey_version(self, request: LoadJourneyInput) -> LoadedJourney:
        """The journey file, stored as a version if no trial ran it before (`journey_versions`)."""
        assert self.engine is not None, "JourneyActivities needs the database to store versions"
        path, definition = self._load(request)
        return LoadedJourney(
            definition=definition, version=register(self.engine, definition, str(path))
        )
