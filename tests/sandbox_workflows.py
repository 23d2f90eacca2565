"""Two workflows for tests/test_sandbox.py, in a module of their own: the sandbox imports a
workflow's module again for each run."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow


@workflow.defn(sandboxed=True)
class ReadsTheWallClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()  # not deterministic: the sandbox refuses it


@workflow.defn(sandboxed=True)
class Echoes:
    @workflow.run
    async def run(self, text: str) -> str:
        return f"{workflow.info().workflow_id}: {text}"
