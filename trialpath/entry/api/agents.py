"""Success-call agents: their hours, time zone and daily capacity (`trialpath.support.agents`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from trialpath.core.definition import AGENT_NAME
from trialpath.entry.api.routes import COMMON, _problems
from trialpath.entry.api.security import allow
from trialpath.entry.commands import TrialProblem
from trialpath.entry.trials import Trials
from trialpath.support.agents import (
    AgentPublic,
    AgentSettings,
    journey_agents,
    list_agents,
    remove_agent,
    set_agent,
)

AgentName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=AGENT_NAME.pattern,
        description="The agent's name, as calls and the journey name them.",
    ),
]

router = APIRouter(prefix="/v1/agents", tags=["agents"])


class AgentNotFound(TrialProblem):
    status = 404
    title = "Agent not found"


async def _service(request: Request) -> Trials:
    service: Trials = request.app.state.trials
    return service


ServiceDep = Annotated[Trials, Depends(_service)]


@router.get(
    "",
    dependencies=[Depends(allow("read"))],
    response_model=list[AgentPublic],
    summary="The success-call agents: hours, time zone, days, daily capacity, calls to come",
    responses=_problems(*COMMON),
)
async def get_agents(service: ServiceDep) -> list[AgentPublic]:
    agents = journey_agents(service.settings)
    return await asyncio.to_thread(list_agents, service.engine, agents)


@router.put(
    "/{name}",
    dependencies=[Depends(allow("agents", "agent.set"))],
    response_model=AgentPublic,
    summary="Create or replace an agent's settings (new calls follow them at once)",
    responses={
        201: {"model": AgentPublic, "description": "A new agent"},
        **_problems(*COMMON),
    },
)
async def put_agent(
    name: AgentName, settings: AgentSettings, service: ServiceDep, response: Response
) -> AgentPublic:
    agents = journey_agents(service.settings)
    agent, created = await asyncio.to_thread(set_agent, service.engine, name, settings, agents)
    if created:
        response.status_code = 201
    return agent


@router.delete(
    "/{name}",
    dependencies=[Depends(allow("agents", "agent.remove"))],
    response_model=AgentPublic,
    summary="Remove an agent: offered no new calls; calls already booked keep them",
    responses=_problems(*COMMON, 404),
)
async def delete_agent(name: AgentName, service: ServiceDep) -> AgentPublic:
    agents = journey_agents(service.settings)
    agent = await asyncio.to_thread(remove_agent, service.engine, name, agents)
    if agent is None:
        raise AgentNotFound(f"there is no agent named {name!r}")
    return agent
