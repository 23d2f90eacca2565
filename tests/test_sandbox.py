"""The worker's workflow runner (`trialpath.operations.sandbox`): the SDK's sandbox, without the
per-payload context lookups when the data converter has no use for them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

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
from trialpath.operations.sandbox import ContextFreeRunner, workflow_runner
from trialpath.operations.temporal import DATA_CONVERTER

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
