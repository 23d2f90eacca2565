"""The trial workflow's fixed choices: the patches that keep running trials on the code they
started with (docs/versioning.md), its retry policies and its batching limits."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Changes of behaviour since a released version (docs/versioning.md): `workflow.patched` ids.
PATCH_SIGNUP_AT_START = "signup-at-start-time"
PATCH_SYNC_LATE_SIGNALS = "sync-late-signals"
PATCH_ACCEPTED_AT = "signals-at-accepted-time"
PATCH_RULES_2 = "journey-rules-2"
PATCH_RULES_3 = "journey-rules-3"
PATCH_RULES_4 = "journey-rules-4"
PATCH_RULES_5 = "journey-rules-5"
PATCH_NEEDS_ATTENTION = "needs-attention"
PATCH_JOURNEY_VERSIONS = "journey-versions"
PATCH_FEWER_ACTIONS = "fewer-actions"
PATCH_RULES_6 = "journey-rules-6"
PATCH_STEP_SENDS = "one-activity-per-step"
EVENTS_PER_RECORD = 100
"""With `fewer-actions`, events that count wait for the next record the trial makes anyway, its
next timer or this many of them, whichever comes first."""
TASK_KINDS = {
    "support_alert": "stalled",
    "inactive_alert": "inactive",
    "call_unassigned": "call_unassigned",
}
"""The alerts that open a support task (when they say `cs_task`), and the task's kind."""
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["TemplateError", "DeliveryRejected"],
    # 0: unlimited. A message with a fallback channel gets `fallback_after_attempts`.
)
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))
"""Database activities stay ordinary activities, not local ones. Local activities were
measured cheaper (bench/README), but a query or a slow write while one runs makes the worker
close its workflow task without commands and take a new one; a worker that later replays the
trial merges those two tasks and runs the first one's steps at the second one's time
(temporalio/sdk-rust#1606, open). The journey's decisions read the time, so the replay
took another branch (a nondeterminism error, found by tests/test_chaos.py)."""
