"""The workflow sandbox the worker runs trials in (`workflow_runner`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import (
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WithSerializationContext,
)
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def workflow_runner(converter: DataConverter, trusted: Sequence[str] = ()) -> WorkflowRunner:
    """The SDK's sandbox; without its per-payload context lookups when `converter` has no use
    for them (`ContextFreeRunner`).

    `trusted`: workflow modules passed through, imported once per worker rather than anew in
    each workflow's sandbox. Re-running the trial workflow's module (its class, its handlers'
    definitions) for every trial started or replayed was about a quarter of the worker's CPU
    while trials enrol (bench/README, "The workflow module imported once"). A trusted module's
    own calls are not checked at run time, as those of the modules it passes through are not:
    the tests run it strict (`Settings.workflow_sandbox`)."""
    restrictions = SandboxRestrictions.default
    if trusted:
        restrictions = restrictions.with_passthrough_modules(*trusted)
    sandbox = SandboxedWorkflowRunner(restrictions=restrictions)
    context_aware = (
        isinstance(converter.payload_codec, WithSerializationContext)
        or converter.external_storage is not None
    )
    return sandbox if context_aware else ContextFreeRunner(sandbox)


class ContextFreeRunner(WorkflowRunner):
    """A workflow runner that tells the worker no payload needs a serialization context.

    Before the codec encodes or decodes a workflow task's payloads, the SDK asks the workflow
    instance which workflow or activity each payload belongs to, so that a codec that varies by
    it (`WithSerializationContext`) or external payload storage can use it. In the sandbox each
    question compiles and runs code inside the trial's sandbox, several times for every
    activation and completion: about a sixth of the worker's CPU when trials enrol (bench/README,
    "The sandbox without context lookups"). Trialpath's codec encrypts every payload alike, and it
    keeps no payload outside Temporal, so the answer changes nothing: `workflow_runner` uses this
    runner only for such a converter. The rest is the wrapped runner's: the same sandbox and
    determinism checks.
    """

    def __init__(self, inner: WorkflowRunner) -> None:
        self.inner = inner

    def prepare_workflow(self, defn: Any) -> None:
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(self.inner.create_instance(det))

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


class _ContextFreeInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance) -> None:
        self.inner = inner

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self.inner.activate(act)

    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        return None

    def get_external_store_context(self, command_info: Any) -> StorageDriverStoreContext:
        return StorageDriverStoreContext(target=None)

    def get_info(self) -> Any:
        return self.inner.get_info()

    def get_thread_id(self) -> int | None:
        return self.inner.get_thread_id()
