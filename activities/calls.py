"""Success calls in the agents' calendars: booking a slot, releasing a trial's slots."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from trialpath.operations.logs import bind_activity
from trialpath.support.agents import SlotOffer, SlotRequest, offer_slot, release_slots


class ReleaseSlotsInput(BaseModel):
    workflow_id: str
    after: datetime
    """Only calls starting after this (journey time) are freed: those before took place."""


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
