"""The worker: the composition root. Builds every dependency and runs the trial workflows.

python worker.py          (or `trialpath worker`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from activities.journey import JourneyActivities
from activities.messaging import MessagingActivities
from activities.records import RecordActivities
from trialpath.config import Settings, get_settings
from trialpath.db import make_engine
from trialpath.delivery import Provider
from trialpath.delivery.outbox import OutboxProvider
from trialpath.templating import Product, Renderer
from trialpath.temporal import connect, exit_process, register_search_attributes
from workflows.trial import TrialWorkflow


def build_providers(settings: Settings) -> dict[str, Provider]:
    outbox = OutboxProvider(settings.outbox_dir)
    chosen = {
        "email": settings.email_provider,
        "sms": settings.sms_provider,
        "in_app": settings.in_app_provider,
        "support": settings.support_provider,
    }
    providers: dict[str, Provider] = {}
    for channel, name in chosen.items():
        if name != "outbox":
            raise ValueError(f"unknown delivery provider {name!r} for {channel}; use 'outbox'")
        providers[channel] = outbox
    return providers


def build_worker(
    client: Client, settings: Settings, executor: ThreadPoolExecutor, task_queue: str | None = None
) -> Worker:
    engine = make_engine(settings.effective_database_url)
    product = Product(
        name=settings.product_name,
        app_url=settings.product_app_url,
        company_address=settings.company_address,
        support_email=settings.support_email,
    )
    journey_activities = JourneyActivities(settings.journey_file)
    messaging = MessagingActivities(
        engine,
        Renderer(settings.templates_dir),
        build_providers(settings),
        product,
        sender=f"{settings.product_name} <{settings.sender_email}>",
    )
    records = RecordActivities(engine)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[TrialWorkflow],
        activities=[
            journey_activities.load_journey,
            messaging.send_message,
            messaging.assign_agent,
            messaging.open_cs_task,
            records.record_progress,
        ],
        activity_executor=executor,
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    client = await connect(settings)
    await register_search_attributes(client)
    with ThreadPoolExecutor(max_workers=16) as executor:
        worker = build_worker(client, settings, executor)
        logging.getLogger("trialpath").info(
            "worker polling task queue %r on %s", settings.task_queue, settings.temporal_address
        )
        await worker.run()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    exit_process(0)
