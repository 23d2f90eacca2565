"""The calendar invitation attached to the success call's emails."""

from __future__ import annotations

from datetime import timedelta

from icalendar import Calendar, Event, vCalAddress, vText

from activities.message_io import SendMessageInput
from trialpath.messages.templating import Product
from trialpath.operations.models import utcnow

ICS_MESSAGES = frozenset({"call_invite", "call_booked", "call_rescheduled"})
"""The messages whose email carries the invitation."""


def call_invitation(request: SendMessageInput, product: Product) -> bytes:
    """An iCalendar invitation; the same UID with a higher SEQUENCE updates it in calendars."""
    assert request.call is not None and request.call.at is not None
    cal = Calendar()
    cal.add("prodid", "-//Trialpath//success call//EN")
    cal.add("version", "2.0")
    cal.add("method", "REQUEST")
    event = Event()
    event.add("uid", f"{request.workflow_id}-success-call@trialpath")
    event.add("sequence", request.call.version)
    event.add("dtstamp", utcnow())
    event.add("dtstart", request.call.at)
    event.add("dtend", request.call.at + timedelta(minutes=request.call.duration_minutes))
    agent = request.call.agent or "our team"
    event.add("summary", f"{product.name} onboarding call with {agent}")
    event.add("description", f"A {request.call.duration_minutes}-minute call to get you set up.")
    organizer = vCalAddress(f"mailto:{product.support_email}")
    organizer.params["cn"] = vText(f"{agent} ({product.name})")
    event["organizer"] = organizer
    attendee = vCalAddress(f"mailto:{request.recipient.email}")
    attendee.params["cn"] = vText(request.recipient.name)
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    event.add("attendee", attendee, encode=False)
    cal.add_component(event)
    data: bytes = cal.to_ical()
    return data
