"""The payload converter made once per process, against the SDK's, side by side in one run.

    .venv/bin/python bench/payload_converter.py [--rounds 2000]

What the worker does for each workflow activation, with each converter: build a data
converter (the SDK builds one per activation and per completion, to give each command its
serialization context), then decode an activity's result with it (a step's `send_step`
results) and encode a command's input (a `send_step` request). Prints microseconds per
activation for the SDK's `PydanticPayloadConverter` and for `SharedPydanticPayloadConverter`
(`trialpath/operations/temporal.py`), and their ratio. CPU only; nothing is started.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.message_io import (
    ChannelPlan,
    Recipient,
    SendMessageInput,
    SendResult,
    SendStepInput,
    TrialFacts,
)
from trialpath.operations.temporal import SharedPydanticPayloadConverter

REQUEST = SendStepInput(
    message=SendMessageInput(
        workflow_id="trial-u1",
        user_id="u1",
        occurrence="welcome",
        message="welcome",
        channel="email",
        category="transactional",
        persona="technical",
        recipient=Recipient(name="Ada Lovelace", email="ada@example.com"),
        trial=TrialFacts(
            day=0, days_left=14, ends_on=date(2026, 12, 20), activated=False, activation_progress=0
        ),
    ),
    channels=[ChannelPlan(channel="email"), ChannelPlan(channel="in_app")],
)
RESULTS = [
    SendResult(
        key=f"trial-u1:welcome/{c}", channel=c, template="t", content_hash="h" * 64, status="sent"
    )
    for c in ("email", "in_app")
]


def activation(converter_class: type[PydanticPayloadConverter], payloads: list) -> None:  # type: ignore[type-arg]
    converter = DataConverter(payload_converter_class=converter_class).payload_converter
    converter.from_payloads(payloads, [list[SendResult]])
    converter.to_payloads([REQUEST])


def per_activation(converter_class: type[PydanticPayloadConverter], rounds: int) -> float:
    payloads = DataConverter(payload_converter_class=converter_class).payload_converter.to_payloads(
        [RESULTS]
    )
    start = time.process_time()
    for _ in range(rounds):
        activation(converter_class, payloads)
    return (time.process_time() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    stock: list[float] = []
    shared: list[float] = []
    for _ in range(args.repeats):  # interleaved, so a busy moment hits both alike
        stock.append(per_activation(PydanticPayloadConverter, args.rounds))
        shared.append(per_activation(SharedPydanticPayloadConverter, args.rounds))
    a, b = statistics.median(stock), statistics.median(shared)
    print(f"per activation, median of {args.repeats} x {args.rounds} (CPU time)")
    print(f"  PydanticPayloadConverter         {a:8.1f} us")
    print(f"  SharedPydanticPayloadConverter   {b:8.1f} us")
    print(f"  ratio shared / stock             {b / a:8.2f}")


if __name__ == "__main__":
    main()
