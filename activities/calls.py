"""Success calls: an agent by round-robin (journey rules 1 to 3), or a slot in the agents'
calendars (rules 4 on): booking it, releasing a trial's slots."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from trialpath.operations.logs import bind_activity
from trialpath.operations.models import AgentAssignment, AgentCursor
from trialpath.support.agents import SlotOffer, SlotRequest, offer_slot, release_slots


class ReleaseSlotsInput(BaseModel):
    workflow_id: str
    after: datetime
    """Only calls starting after this (journey time) are freed: those before took place."""


class AssignAgentInput(BaseModel):
    workflow_id: str
    agents: list[str]


class CallActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="offer_call_slot")
    def offer_call_slot(self, request: SlotRequest) -> SlotOffer:
        """Books the earliest free agent slot the request asks for, or an agent free at the
        time the user chose; answers no agent when none is free. Retried, the same request
        gives the same answer and never a second slot (`trialpath.support.agents.offer_slot`)."""
        bind_activity(step=f"call-slot.{request.request}")
        if not request.agents:
            raise ApplicationError("no success-call agents configured", non_retryable=True)
        try:
            return offer_slot(self.engine, request)
        except RuntimeError as err:
            raise ApplicationError(str(err), type="CallSlotBusy") from err

    @activity.defn(name="release_call_slots")
    def release_call_slots(self, request: ReleaseSlotsInput) -> int:
        """Frees the trial's calls still to come (it converted or was cancelled)."""
        return release_slots(self.engine, request.workflow_id, request.after)

    @activity.defn(name="assign_agent")
    def assign_agent(self, request: AssignAgentInput) -> str:
        """Round-robin over the agents, shared by all trials; the same trial always gets the
        same answer, however often the activity is retried."""
        if not request.agents:
            raise ApplicationError("no CS agents configured", non_retryable=True)
        for _ in range(5):
            with Session(self.engine) as session:
                existing = session.get(AgentAssignment, request.workflow_id)
                if existing is not None:
                    assigned: str = existing.agent
                    return assigned
                # One atomic increment (SQLite and PostgreSQL alike): concurrent trials never
                # read the same position.
                taken: int | None = session.execute(
                    update(AgentCursor)
                    .where(col(AgentCursor.id) == 1)
                    .values(position=col(AgentCursor.position) + 1)
                    .returning(col(AgentCursor.position))
                ).scalar()
                if taken is None:
                    session.add(AgentCursor(id=1, position=0))
                else:
                    agent: str = request.agents[(taken - 1) % len(request.agents)]
                    session.add(AgentAssignment(workflow_id=request.workflow_id, agent=agent))
                try:
                    session.commit()
                except IntegrityError:
                    # Another trial created the cursor row first, or this trial's own retry
                    # assigned it meanwhile: look again.
                    session.rollback()
                    continue
                if taken is not None:
                    return agent
        raise ApplicationError("could not assign an agent after 5 attempts")
