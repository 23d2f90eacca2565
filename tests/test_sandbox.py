"""The worker's workflow runner (`trialpath.operations.sandbox`): the SDK's sandbox, without the
per-payload context lookups when the data converter has no use for them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowFailureError
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from tests.sandbox_workflows import Echoes, ReadsTheWallClock
from trialpath.operations.codec import CodecKey, EncryptionCodec
from trialpath.operations.config import Settings
from trialpath.operations.sandbox import ContextFreeRunner, workflow_runner
from trialpath.operations.temporal import DATA_CONVERTER
from worker import trial_workflow_runner

pytestmark = pytest.mark.database_agnostic  # no database here


class PerWorkflowCodec(PayloadCodec, WithSerializationContext):
    """A codec that would vary by workflow (it takes the serialization context)."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    def with_context(self, context: SerializationContext) -> PerWorkflowCodec:
        return self


def test_context_free_only_for_a_converter_that_takes_no_context() -> None:
    encrypted = DataConverter(payload_codec=EncryptionCodec([CodecKey("k1", b"\0" * 32)]))
    assert isinstance(workflow_runner(DATA_CONVERTER), ContextFreeRunner)
    assert isinstance(workflow_runner(encrypted), ContextFreeRunner)
    aware = workflow_runner(DataConverter(payload_codec=PerWorkflowCodec()))
    assert isinstance(aware, SandboxedWorkflowRunner)


async def test_the_runner_keeps_the_sandbox_and_its_checks(env: WorkflowEnvironment) -> None:
    queue = f"sandbox-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ReadsTheWallClock, Echoes],
        workflow_runner=workflow_runner(env.client.data_converter),
        workflow_failure_exception_types=[Exception],
    ):
        echoed = await env.client.execute_workflow(
            Echoes.run, "hello", id="echo-1", task_queue=queue
        )
        assert echoed == "echo-1: hello"
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(ReadsTheWallClock.run, id="clock-1", task_queue=queue)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "RestrictedWorkflowAccessError", cause


async def test_a_trusted_module_is_imported_once_and_its_calls_are_not_checked(
    env: WorkflowEnvironment,
) -> None:
    """What `workflow_sandbox = "trusted"` gives and costs: each run of a trusted module's
    workflow uses the module imported outside the sandbox (the same class object every run),
    and a call the strict sandbox refuses goes through, as it does in the modules a workflow
    passes through. The tests run the trial workflow strict (tests/conftest.py)."""
    queue = f"sandbox-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ReadsTheWallClock, Echoes],
        workflow_runner=workflow_runner(env.client.data_converter, (Echoes.__module__,)),
    ):
        read = await env.client.execute_workflow(
            ReadsTheWallClock.run, id="clock-trusted", task_queue=queue
        )
        assert read.startswith(str(datetime.now().year))
        echoed = await env.client.execute_workflow(
            Echoes.run, "again", id="echo-trusted", task_queue=queue
        )
        assert echoed == "echo-trusted: again"


def test_the_worker_trusts_the_trial_workflow_unless_told_strict(tmp_path: Path) -> None:
    assert os.environ["TRIALPATH_WORKFLOW_SANDBOX"] == "strict"  # tests/conftest.py
    assert Settings(data_dir=tmp_path).workflow_sandbox == "strict"
    assert Settings.model_fields["workflow_sandbox"].default == "trusted"
    trusted = trial_workflow_runner(
        Settings(data_dir=tmp_path, workflow_sandbox="trusted"), DATA_CONVERTER
    )
    strict = trial_workflow_runner(Settings(data_dir=tmp_path), DATA_CONVERTER)
    assert isinstance(trusted, ContextFreeRunner) and isinstance(strict, ContextFreeRunner)
    assert isinstance(trusted.inner, SandboxedWorkflowRunner)
    assert isinstance(strict.inner, SandboxedWorkflowRunner)
    assert "workflows.trial" in trusted.inner.restrictions.passthrough_modules
    assert "workflows.trial" not in strict.inner.restrictions.passthrough_modules
