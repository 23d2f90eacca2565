"""A typed Python client for the Trialpath HTTP API (`/v1`), sync and async.

    from trialpath.client import Trialpath
    with Trialpath("http://127.0.0.1:8000", api_key="...") as tp:
        tp.start_trial("user-42", "ada@example.com", name="Ada Lovelace")
        tp.track("user-42", "integration_connected")
        print(tp.get("user-42").stage)

`AsyncTrialpath` has the same methods, to be awaited (`async with AsyncTrialpath(...) as tp:`).
Every method returns the API's own pydantic models and raises a `TrialpathError` subclass for
an error answer (an RFC 9457 problem) or when the API cannot be reached.

The request each method sends is built by the pure functions of the `requests` module
(`_start_trial`, `_track`...), shared by both classes, which only send it and parse the answer:
`Trialpath` is in `sync`, `AsyncTrialpath` in `asynchronous`, the exceptions in `errors`. The
names other code imports from `trialpath.client` are imported here.
"""

from __future__ import annotations

from trialpath.client.asynchronous import AsyncTrialpath as AsyncTrialpath
from trialpath.client.errors import (
    Conflict as Conflict,
    InvalidRequest as InvalidRequest,
    NotFound as NotFound,
    TrialpathError as TrialpathError,
    Unauthorized as Unauthorized,
    Unavailable as Unavailable,
    error_for as error_for,
)
from trialpath.client.requests import (
    API_KEY_ENV as API_KEY_ENV,
    DEFAULT_BASE_URL as DEFAULT_BASE_URL,
)
from trialpath.client.sync import Trialpath as Trialpath

__all__ = [
    "AsyncTrialpath",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "Trialpath",
    "TrialpathError",
    "Unauthorized",
    "Unavailable",
]
