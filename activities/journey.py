"""Loading the journey definition (once per trial, at start), and its stored version.

A worker keeps the last definition it read from each file, with its version: a trial start
reads the file's bytes and, when they are the ones seen before, skips parsing, validating,
hashing and looking the version up again. An edited file is read anew and stored as a new
version when no trial ran it before."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from trialpath.core.contract import JourneyVersionRef
from trialpath.core.definition import (
    DefinitionError,
    JourneyDefinition,
    parse_definition,
    read_journey_file,
)
from trialpath.operations.versions import register


class LoadJourneyInput(BaseModel):
    path: str | None = None
    """Overrides the configured journey file (tests, experiments)."""


class LoadedJourney(BaseModel):
    definition: JourneyDefinition
    version: JourneyVersionRef


@dataclass(frozen=True)
class _Read:
    text: bytes
    definition: JourneyDefinition
    version: JourneyVersionRef | None = None


class JourneyActivities:
    def __init__(self, journey_file: Path, engine: Engine | None = None) -> None:
        self.journey_file = journey_file
        self.engine = engine
        self._read: dict[Path, _Read] = {}
        """The last definition read from each file (activities run in threads: each entry is
        replaced whole, never changed)."""

    def _load(self, request: LoadJourneyInput) -> tuple[Path, _Read]:
        path = Path(request.path) if request.path else self.journey_file
        try:
            text = read_journey_file(path)
            known = self._read.get(path)
            if known is not None and known.text == text:
                return path, known
            read = _Read(text, parse_definition(text, path))
        except DefinitionError as err:
            # Retrying helps: the file is fixed by a deploy and the trial carries on.
            raise ApplicationError(str(err), type="JourneyDefinitionError") from err
        self._read[path] = read
        return path, read

    @activity.defn(name="load_journey")
    def load_journey(self, request: LoadJourneyInput) -> JourneyDefinition:
        return self._load(request)[1].definition

    @activity.defn(name="load_journey_version")
    def load_journey_version(self, request: LoadJourneyInput) -> LoadedJourney:
        """The journey file, stored as a version if no trial ran it before (`journey_versions`)."""
        assert self.engine is not None, "JourneyActivities needs the database to store versions"
        path, read = self._load(request)
        version = read.version
        if version is None:
            version = register(self.engine, read.definition, str(path))
            if self._read.get(path) is read:
                self._read[path] = replace(read, version=version)
        return LoadedJourney(definition=read.definition, version=version)
