"""Pure tests of the agents' calendars (`trialpath.support.slots`): time zones, DST, working days,
capacity, the user's send window; and the invariant that an agent is never double-booked nor
booked outside their hours, over random agents and requests (Hypothesis)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings, strategies as st

from trialpath.core.definition import WEEKDAYS, CallAgent
from trialpath.support.slots import Booked, Calendar, agent_free_at, earliest_slot, free, working

HALF_HOUR = timedelta(minutes=30)
UTC_ZONE = ZoneInfo("UTC")
MON = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def agent(name: str = "Camille", **fields: object) -> Calendar:
    return Calendar.of(CallAgent.model_validate({"name": name, **fields}))


def test_a_plain_name_works_nine_to_five_utc_monday_to_friday() -> None:
    plain = Calendar.of(CallAgent.model_validate("Camille"))
    assert (plain.timezone, plain.start, plain.end, plain.daily_capacity) == (
        "UTC",
        time(9),
        time(17),
        8,
    )
    assert plain.days == frozenset(WEEKDAYS[:5])


def test_the_earliest_slot_is_inside_the_agents_hours_in_their_time_zone() -> None:
    # Paris is UTC+1 in January: 09:00-17:00 there is 08:00-16:00 UTC.
    paris = agent(timezone="Europe/Paris")
    slot = earliest_slot(
        [(paris, [])], MON, MON + timedelta(days=1), HALF_HOUR, UTC_ZONE, time(0), time(23, 59)
    )
    assert slot is not None and slot.start == MON.replace(hour=8)


def test_the_slot_also_lies_in_the_users_send_window() -> None:
    # Agent in New York (14:00-22:00 UTC), user in Paris with a 09:00-18:00 window (08-17 UTC).
    new_york = agent(timezone="America/New_York")
    slot = earliest_slot(
        [(new_york, [])],
        MON,
        MON + timedelta(days=1),
        HALF_HOUR,
        ZoneInfo("Europe/Paris"),
        time(9),
        time(18),
    )
    assert slot is not None and slot.start == MON.replace(hour=14)
    assert slot.start + HALF_HOUR <= MON.replace(hour=17)


def test_hours_that_never_meet_the_users_window_give_no_slot() -> None:
    # Agent 09:00-15:00 in Los Angeles (17:00-23:00 UTC); user in Tokyo, 09:00-18:00 (00-09
    # UTC): never both.
    los_angeles = agent(timezone="America/Los_Angeles", hours={"start": "09:00", "end": "15:00"})
    slot = earliest_slot(
        [(los_angeles, [])],
        MON,
        MON + timedelta(days=3),
        HALF_HOUR,
        ZoneInfo("Asia/Tokyo"),
        time(9),
        time(18),
    )
    assert slot is None


def test_booked_calls_and_capacity_push_to_the_next_slot_and_day() -> None:
    small = agent(daily_capacity=2)
    booked = [Booked(MON.replace(hour=9), MON.replace(hour=9, minute=30))]
    window = (MON, MON + timedelta(days=2))
    slot = earliest_slot([(small, booked)], *window, HALF_HOUR, UTC_ZONE, time(0), time(23, 59))
    assert slot is not None and slot.start == MON.replace(hour=9, minute=30)
    booked.append(Booked(slot.start, slot.start + HALF_HOUR))
    # Two calls on Monday: full; Tuesday 09:00 is next.
    slot = earliest_slot([(small, booked)], *window, HALF_HOUR, UTC_ZONE, time(0), time(23, 59))
    assert slot is not None and slot.start == MON.replace(hour=9) + timedelta(days=1)


def test_no_slot_on_days_off() -> None:
    saturday = MON + timedelta(days=5)
    slot = earliest_slot(
        [(agent(), [])],
        saturday,
        saturday + timedelta(days=2),
        HALF_HOUR,
        UTC_ZONE,
        time(0),
        time(23, 59),
    )
    assert slot is None
    weekend = agent(days=["sat", "sun"])
    assert working(weekend, saturday.replace(hour=9), saturday.replace(hour=9, minute=30))


def test_same_time_goes_to_the_least_loaded_agent() -> None:
    a, b, c = agent("A"), agent("B"), agent("C")
    busy = [Booked(MON.replace(hour=15), MON.replace(hour=15, minute=30))]
    slot = earliest_slot(
        [(a, busy), (b, []), (c, [])],
        MON.replace(hour=10),
        MON.replace(hour=12),
        HALF_HOUR,
        UTC_ZONE,
        time(0),
        time(23, 59),
    )
    assert slot is not None and (slot.agent, slot.start) == ("B", MON.replace(hour=10))


def test_dst_spring_forward_keeps_the_local_hours() -> None:
    # Europe/Paris moves to UTC+2 on Sunday 2026-03-29: Monday 09:00 there is 07:00 UTC.
    monday = datetime(2026, 3, 30, tzinfo=UTC)
    paris = agent(timezone="Europe/Paris")
    slot = earliest_slot(
        [(paris, [])], monday, monday + timedelta(days=1), HALF_HOUR, UTC_ZONE, time(0), time(23)
    )
    assert slot is not None and slot.start == monday.replace(hour=7)
    before = datetime(2026, 3, 27, tzinfo=UTC)  # the Friday before: UTC+1
    slot = earliest_slot(
        [(paris, [])], before, before + timedelta(days=1), HALF_HOUR, UTC_ZONE, time(0), time(23)
    )
    assert slot is not None and slot.start == before.replace(hour=8)


def test_a_local_time_skipped_by_dst_is_no_slot() -> None:
    # New York skips 02:00-03:00 on 2026-03-08: an agent working 02:00-04:00 has 03:00 only.
    night = agent(
        timezone="America/New_York", hours={"start": "02:00", "end": "04:00"}, days=["sun"]
    )
    day = datetime(2026, 3, 8, tzinfo=UTC)
    slot = earliest_slot(
        [(night, [])], day, day + timedelta(days=1), HALF_HOUR, UTC_ZONE, time(0), time(23, 59)
    )
    assert slot is not None
    assert slot.start.astimezone(ZoneInfo("America/New_York")).time() == time(3)


def test_a_time_the_user_chose_keeps_the_preferred_agent_if_free() -> None:
    a, b = agent("A"), agent("B")
    at = MON.replace(hour=11)
    assert agent_free_at([(a, []), (b, [])], at, HALF_HOUR, prefer="B") == "B"
    busy = [Booked(at - timedelta(minutes=15), at + timedelta(minutes=15))]
    assert agent_free_at([(a, []), (b, busy)], at, HALF_HOUR, prefer="B") == "A"
    assert agent_free_at([(a, busy), (b, busy)], at, HALF_HOUR, prefer="B") is None
    # Outside everyone's hours: nobody.
    assert agent_free_at([(a, []), (b, [])], MON.replace(hour=20), HALF_HOUR) is None


# --- Invariant: never double-booked, never outside hours -------------------------------------

ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Sydney")

agents_strategy = st.lists(
    st.builds(
        lambda tz, start, length, days, cap: CallAgent(
            name="x",
            timezone=tz,
            hours={"start": time(start), "end": time(min(start + length, 23))},  # type: ignore[arg-type]
            days=days,
            daily_capacity=cap,
        ),
        st.sampled_from(ZONES),
        st.integers(0, 20),
        st.integers(1, 10),
        st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True).map(tuple),
        st.integers(1, 6),
    ),
    min_size=1,
    max_size=4,
)
requests_strategy = st.lists(
    st.tuples(
        st.booleans(),  # a time the user chose, or the earliest free slot
        st.integers(0, 24 * 4 * 10),  # quarter hours from Monday
        st.sampled_from(ZONES),
        st.sampled_from([15, 30, 45, 60]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(agents_strategy, requests_strategy)
def test_an_agent_is_never_double_booked_nor_booked_outside_their_hours(
    specs: list[CallAgent], requests: list[tuple[bool, int, str, int]]
) -> None:
    calendars = [
        Calendar.of(spec.model_copy(update={"name": f"agent{i}"})) for i, spec in enumerate(specs)
    ]
    booked: dict[str, list[Booked]] = {c.name: [] for c in calendars}
    for chosen, quarter, user_zone, minutes in requests:
        duration = timedelta(minutes=minutes)
        start = MON + timedelta(minutes=15 * quarter)
        table = [(c, booked[c.name]) for c in calendars]
        if chosen:
            name = agent_free_at(table, start, duration)
            at = start
        else:
            slot = earliest_slot(
                table,
                start,
                start + timedelta(days=3),
                duration,
                ZoneInfo(user_zone),
                time(9),
                time(18),
            )
            name, at = (slot.agent, slot.start) if slot else (None, start)
            if slot is not None:
                local = slot.start.astimezone(ZoneInfo(user_zone))
                assert time(9) <= local.time() and (local + duration).time() <= time(18)
                assert start <= slot.start and slot.start + duration <= start + timedelta(days=3)
        if name is None:
            continue
        calendar = next(c for c in calendars if c.name == name)
        assert working(calendar, at, at + duration)
        assert free(calendar, booked[name], at, at + duration)
        booked[name].append(Booked(at, at + duration))
    for calendar in calendars:
        calls = sorted(booked[calendar.name], key=lambda b: b.start)
        for first, second in itertools.pairwise(calls):
            assert first.end <= second.start, f"{calendar.name} double-booked"
        per_day: dict[object, int] = {}
        for call in calls:
            day = call.start.astimezone(calendar.zone).date()
            per_day[day] = per_day.get(day, 0) + 1
        assert all(n <= calendar.daily_capacity for n in per_day.values())
