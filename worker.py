"""The worker: the composition root. Builds every dependency and runs the trial workflows.

python worker.py          (or `trialpath worker`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker, WorkflowRunner

from activities.calls import CallActivities
from activities.journey import JourneyActivities
from activities.messaging import MessagingActivities
from activities.records import RecordActivities
from trialpath.delivery import Provider
from trialpath.delivery.inbox import InboxProvider
from trialpath.delivery.outbox import OutboxProvider
from trialpath.delivery.preferences import UnsubscribeTokens, signing_secret
from trialpath.messages.templating import Product, Renderer
from trialpath.operations.config import Settings, SettingsError, get_settings
from trialpath.operations.db import engine_for
from trialpath.operations.logs import configure_from_settings
from trialpath.operations.metrics import serve_worker_metrics, worker_runtime
from trialpath.operations.sandbox import workflow_runner
from trialpath.operations.temporal import connect, exit_process, register_search_attributes
from workflows.trial import TrialWorkflow


def build_provider(settings: Settings, name: str) -> Provider:
    """One provider by its configured name (`TRIALPATH_<CHANNEL>_PROVIDER`)."""
    timeout = settings.delivery_timeout_seconds
    if name == "outbox":
        return OutboxProvider(settings.outbox_dir)
    if name == "inbox":
        return InboxProvider()
    if name == "sendgrid":
        from trialpath.delivery.sendgrid import SendGridProvider

        return SendGridProvider(
            settings.sendgrid_api_key.get_secret_value(),
            settings.sendgrid_base_url,
            sandbox=settings.sendgrid_sandbox,
            timeout=timeout,
        )
    if name == "twilio":
        from trialpath.delivery.twilio import TwilioProvider

        return TwilioProvider(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            messaging_service_sid=settings.twilio_messaging_service_sid,
            from_number=settings.twilio_from_number,
            base_url=settings.twilio_base_url,
            status_callback_url=f"{settings.effective_public_url}/v1/webhooks/twilio",
            max_segments=settings.sms_max_segments,
            timeout=timeout,
        )
    if name == "smtp":
        from trialpath.delivery.smtp import SmtpProvider

        return SmtpProvider(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            security=settings.smtp_security,
            timeout=timeout,
        )
    if name == "webhook":
        from trialpath.delivery.webhook import WebhookProvider, temporal_ui_link

        return WebhookProvider(
            settings.support_webhook_url.get_secret_value(),
            secret=settings.support_webhook_secret.get_secret_value(),
            link=temporal_ui_link(settings.temporal_ui_url, settings.temporal_namespace),
            timeout=timeout,
        )
    raise ValueError(f"unknown delivery provider {name!r}")


def build_providers(settings: Settings) -> dict[str, Provider]:
    chosen = {
        "email": settings.email_provider,
        "sms": settings.sms_provider,
        "in_app": settings.in_app_provider,
        "support": settings.support_provider,
    }
    # Channels naming the same provider share one instance (one HTTP client, one folder).
    made: dict[str, Provider] = {}
    for name in set(chosen.values()):
        made[name] = build_provider(settings, name)
    return {channel: made[name] for channel, name in chosen.items()}


def trial_workflow_runner(settings: Settings, converter: DataConverter) -> WorkflowRunner:
    """The sandbox trials run in: the trial workflow's module imported once, or anew for each
    trial with every call checked (`Settings.workflow_sandbox`)."""
    trusted = (TrialWorkflow.__module__,) if settings.workflow_sandbox == "trusted" else ()
    return workflow_runner(converter, trusted)


def build_worker(
    client: Client, settings: Settings, executor: ThreadPoolExecutor, task_queue: str | None = None
) -> Worker:
    engine = engine_for(settings)
    product = Product(
        name=settings.product_name,
        app_url=settings.product_app_url,
        company_address=settings.company_address,
        support_email=settings.support_email,
    )
    journey_activities = JourneyActivities(settings.journey_file, engine)
    messaging = MessagingActivities(
        engine,
        Renderer(settings.templates_dir),
        build_providers(settings),
        product,
        sender=f"{settings.product_name} <{settings.sender_email}>",
        tokens=UnsubscribeTokens(signing_secret(settings)),
        public_url=settings.effective_public_url,
        booking_url=settings.booking_url,
        reconcile_after=timedelta(seconds=settings.reconcile_after_seconds),
    )
    records = RecordActivities(engine)
    calls = CallActivities(engine)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[TrialWorkflow],
        activities=[
            journey_activities.load_journey,
            journey_activities.load_journey_version,
            messaging.send_message,
            messaging.send_step,
            messaging.alert_template_failure,
            calls.assign_agent,
            calls.offer_call_slot,
            calls.release_call_slots,
            records.record_progress,
            records.open_cs_task,
        ],
        activity_executor=executor,
        # The client's converter is the worker's (`connect`, `data_converter(settings)`).
        workflow_runner=trial_workflow_runner(settings, client.data_converter),
        max_cached_workflows=settings.worker_max_cached_workflows,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_seconds),
    )


async def main() -> None:
    settings = get_settings()
    configure_from_settings(settings)
    log = logging.getLogger("trialpath")
    client = await connect(settings, runtime=worker_runtime(settings))
    await register_search_attributes(client)
    if (port := serve_worker_metrics(settings)) is not None:
        log.info(
            "metrics on http://%s:%d/metrics (SDK) and :%d/metrics (Trialpath)",
            settings.metrics_host,
            settings.worker_metrics_port,
            port,
        )
    # SIGTERM (docker stop, Kubernetes) and Ctrl-C: stop polling, let running activities
    # finish within the graceful shutdown timeout, then exit 0.
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    with ThreadPoolExecutor(max_workers=settings.worker_activity_threads) as executor:
        worker = build_worker(client, settings, executor)
        log.info(
            "worker polling task queue %r on %s", settings.task_queue, settings.temporal_address
        )
        running = asyncio.create_task(worker.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            log.info(
                "stopping: no new tasks, running activities get %gs to finish",
                settings.worker_shutdown_seconds,
            )
            await worker.shutdown()
        stopping.cancel()
        await running  # A worker that failed raises here.
        log.info("worker stopped")


if __name__ == "__main__":
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        exit_process(2)
    exit_process(0)
