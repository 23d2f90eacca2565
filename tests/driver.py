"""Driving a trial through the time-skipping server: start it, move the clock, signal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.deadlines import waiting_for
from trialpath.core.contract import (
    Qualification,
    QualifyInput,
    QualifyResult,
    TrialProfile,
    TrialStatus,
    workflow_id_for,
)
from trialpath.core.journey import TrialInput
from trialpath.growth import simulate
from trialpath.operations.config import Settings
from workflows.trial import TrialWorkflow

DAY = timedelta(days=1)


async def skip_to(env: WorkflowEnvironment, target: datetime, what: str) -> None:
    """Moves the time-skipping server's clock to `target`, a few hours per call, as the
    simulation does (`trialpath.growth.simulate.skip_to`)."""
    with waiting_for(f"the time-skipping server to reach {target:%Y-%m-%d %H:%M} ({what})"):
        await simulate.skip_to(env, target)


async def align(env: WorkflowEnvironment, hour: int = 8) -> datetime:
    """Skips to the next `hour`:00 UTC so every scenario starts at the same time of day."""
    now = await env.get_current_time()
    target = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if target <= now:
        target += DAY
    await skip_to(env, target, f"{hour:02d}:00 UTC")
    return await env.get_current_time()


class TrialDriver:
    def __init__(
        self,
        env: WorkflowEnvironment,
        settings: Settings,
        user_id: str,
        *,
        role: str | None = "technical",
        challenge: str | None = None,
        urgency: str | None = "this_month",
        phone: str | None = None,
        company: str = "",
        locale: str = "en",
        timezone: str = "UTC",
        trial_days: int | None = None,
        stamp_signals: bool = False,
    ) -> None:
        self.env = env
        # As the API relays them: each signal carries the time it was accepted.
        self.stamp_signals = stamp_signals
        self.settings = settings
        self.user_id = user_id
        qualification = None
        if role or challenge or urgency:
            qualification = Qualification.model_validate(
                {"role": role, "challenge": challenge, "urgency": urgency}
            )
        self.profile_args: dict[str, Any] = dict(
            user_id=user_id,
            name="Ada Lovelace",
            email=f"{user_id}@example.com",
            phone=phone,
            locale=locale,
            timezone=timezone,
            company=company,
            qualification=qualification,
            trial_days=trial_days,
        )
        self.signup_at: datetime = datetime.now(UTC)
        self.handle: WorkflowHandle[TrialWorkflow, TrialStatus] | None = None

    async def start(
        self, *, as_the_api: bool = False
    ) -> WorkflowHandle[TrialWorkflow, TrialStatus]:
        """Starts the trial with its signup time, or (`as_the_api`) without one, as the API
        does: the workflow then dates it from the start request."""
        self.signup_at = await self.env.get_current_time()
        profile = TrialProfile(
            signup_at=None if as_the_api else self.signup_at, **self.profile_args
        )
        self.handle = await self.env.client.start_workflow(
            TrialWorkflow.run,
            TrialInput(profile=profile),
            id=workflow_id_for(self.user_id),
            task_queue=self.settings.task_queue,
        )
        if as_the_api:
            self.signup_at = (await self.handle.describe()).start_time
        return self.handle

    async def at_day(self, day: float) -> None:
        await skip_to(self.env, self.signup_at + day * DAY, f"day {day:g} of {self.user_id}")

    async def signal(self, name: str, payload: dict[str, Any] | None = None) -> None:
        assert self.handle is not None
        payload = dict(payload or {})
        if self.stamp_signals:
            payload["accepted_at"] = (await self.env.get_current_time()).isoformat()
        await self.handle.signal(name, payload)

    async def event(self, name: str, count: int = 1, **fields: Any) -> None:
        for _ in range(count):
            await self.signal("event", {"name": name, **fields})

    async def qualify(self, role: str, challenge: str, urgency: str) -> QualifyResult:
        assert self.handle is not None
        return await self.handle.execute_update(
            TrialWorkflow.qualify, QualifyInput(role=role, challenge=challenge, urgency=urgency)
        )

    async def status(self) -> TrialStatus:
        assert self.handle is not None
        return await self.handle.query(TrialWorkflow.status)

    async def result(self) -> TrialStatus:
        assert self.handle is not None
        with waiting_for(f"the trial of {self.user_id} to end"):
            return await self.handle.result()

    def iso(self, day: float) -> str:
        return (self.signup_at + day * DAY).isoformat()


def sent_log(status: TrialStatus) -> list[tuple[int, str]]:
    """(day, `step/channel`) for every message sent, in order."""
    return [(s.day, s.key.split(":", 1)[1]) for s in status.sent]
