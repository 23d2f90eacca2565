"""Rendering and sending messages, and telling support of a broken template.

A send is effectively once: the message row with its unique idempotency key is written before
the provider is called, and a retried activity finds the row instead of sending again.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.invitation import ICS_MESSAGES, call_invitation
from activities.message_io import (
    TEMPLATE_BROKEN,
    SendMessageInput,
    SendResult,
    SendStepInput,
    TemplateFailure,
)
from trialpath.delivery import Attachment, DeliveryError, OutgoingMessage, Provider, Receipt
from trialpath.delivery.preferences import (
    SURVEY_SCALES,
    SurveyTokens,
    UnsubscribeTokens,
    booking_link,
    unsubscribed,
)
from trialpath.messages.templating import Product, Renderer, TemplateProblem, message_context
from trialpath.operations.logs import bind_activity
from trialpath.operations.metrics import MESSAGES, PROVIDER_LATENCY
from trialpath.operations.models import Message, MessageEvent, utcnow

FINAL_STATUSES = frozenset({"sent", "failed", "skipped", "unknown"})
MAX_RETRY_AFTER = timedelta(hours=1)
LOOKUP_ROOM = 3
"""Activity attempts allowed per provider call when a send has a fallback (see `_hand_over`)."""


class MessagingActivities:
    def __init__(
        self,
        engine: Engine,
        renderer: Renderer,
        providers: Mapping[str, Provider],
        product: Product,
        sender: str,
        *,
        tokens: UnsubscribeTokens | None = None,
        public_url: str = "",
        booking_url: str = "",
        reconcile_after: timedelta = timedelta(minutes=10),
    ) -> None:
        self.engine = engine
        self.renderer = renderer
        self.providers = providers
        self.product = product
        self.sender = sender
        self.tokens = tokens
        self.public_url = public_url.rstrip("/")
        self.booking_url = booking_url
        self.reconcile_after = reconcile_after

    @activity.defn(name="send_message")
    def send_message(self, request: SendMessageInput) -> SendResult:
        """Renders and sends one message on one channel, at most once per idempotency key.

        The row is written before the provider is called, marked `sending` (a new message's
        row is written so, in one transaction; a row left `pending` by an earlier attempt is
        marked just before the call). An attempt that finds `sending` does not know whether the
        provider accepted the previous call (a timeout, a crash): it looks for the provider's
        record of it (a webhook event carrying the key, or the provider's own lookup) and sends
        again only when the provider certainly has not got it, or after `reconcile_after`
        without any record when the provider cannot be asked.
        """
        key = request.key
        bind_activity(user_id=request.user_id, step=f"{request.occurrence}/{request.channel}")
        provider = self._provider(request.channel)
        with Session(self.engine) as session:
            row = session.get(Message, key)
        if row is None:
            context = self._context(request)
            row, claimed = self._write_row(request, context)
            if claimed:
                if row.status in FINAL_STATUSES:
                    MESSAGES.labels(row.channel, row.status).inc()
                    return _result(row)
                outgoing = self._outgoing(request, row, context)
                return self._hand_over(row, outgoing, provider, request.max_attempts, claimed=True)
        if row.status in FINAL_STATUSES:
            return _result(row)
        skipped = self._skip_reason(request)
        if skipped is not None:
            return self._finish(row, status="skipped", error=skipped)
        outgoing = self._outgoing(request, row)
        return self._hand_over(row, outgoing, provider, request.max_attempts)

    @activity.defn(name="send_step")
    def send_step(self, request: SendStepInput) -> list[SendResult]:
        """Sends every channel of one step, each as `send_message` does (once per idempotency
        key), and returns one settled result per channel, in order.

        A channel whose template is broken comes back `template_broken`; one refused for good
        comes back `failed`, or, when it has a fallback, as the fallback's result. While a
        channel still needs another attempt (the provider unavailable, an outcome to look up),
        the others are sent or settled all the same and the activity fails retryably: the
        next attempt finds their rows final and calls no provider for them again.
        """
        results: list[SendResult] = []
        pending: list[ApplicationError] = []
        for plan in request.channels:
            result = self._settle(request.send(plan.channel, plan.max_attempts), pending)
            if result is not None and result.status == "failed" and plan.fallback:
                activity.logger.info(
                    "%s: %s failed, using %s",
                    request.message.occurrence,
                    plan.channel,
                    plan.fallback,
                )
                result = self._settle(request.send(plan.fallback), pending)
            if result is not None:
                results.append(result)
        if pending:
            delays = [err.next_retry_delay for err in pending if err.next_retry_delay]
            raise ApplicationError(
                "; ".join(err.message for err in pending),
                type=pending[0].type,
                # The soonest any channel asks for; the policy's backoff when one asks nothing.
                next_retry_delay=min(delays) if len(delays) == len(pending) else None,
            )
        return results

    def _settle(
        self, request: SendMessageInput, pending: list[ApplicationError]
    ) -> SendResult | None:
        """One channel's result, or None when it needs another attempt (its error added to
        `pending`)."""
        try:
            return self.send_message(request)
        except ApplicationError as err:
            if err.type == "TemplateError":
                return SendResult(
                    key=request.key,
                    channel=request.channel,
                    template="",
                    content_hash="",
                    status=TEMPLATE_BROKEN,
                    error=err.message,
                )
            if err.non_retryable:
                with Session(self.engine) as session:
                    row = session.get(Message, request.key)
                assert row is not None
                return _result(row).model_copy(update={"error": row.error})
            pending.append(err)
            return None

    def _skip_reason(self, request: SendMessageInput) -> str | None:
        """Why the message is not to be sent at all, or None."""
        read_at = self._read_at(request.unless_read) if request.unless_read else None
        if read_at is not None:
            return f"the in-app copy was read at {read_at:%Y-%m-%d %H:%M:%S} UTC"
        if request.category == "marketing" and request.channel in self._opted_out(request):
            return f"the user unsubscribed from {request.channel}"
        return None

    def _hand_over(
        self,
        row: Message,
        outgoing: OutgoingMessage,
        provider: Provider,
        max_attempts: int = 0,
        claimed: bool = False,
    ) -> SendResult:
        """Gives the message to the provider, once.

        With `max_attempts` (the workflow then falls back to another channel), the row is
        settled for good after that many calls to the provider: `failed` when the provider
        certainly has not got it, `unknown` when nobody can tell, so the fallback never makes
        a second copy of a message that may have gone out. Looking up an earlier call's outcome
        is not a call: lookups get `LOOKUP_ROOM` times as many activity attempts. `claimed`: the
        row was just written `sending` for this call."""
        key = row.key
        attempt = row.attempts if claimed else row.attempts + 1
        last_call = bool(max_attempts) and attempt >= max_attempts
        if row.status == "sending" and not claimed:
            try:
                receipt = self._reconcile(row, outgoing, provider)
            except ApplicationError as err:
                if max_attempts and activity.info().attempt >= max_attempts * LOOKUP_ROOM:
                    return self._finish(
                        row, status="unknown", error=f"outcome unknown, not sent again: {err}"
                    )
                raise
            if receipt is not None:
                return self._finish(row, status="sent", provider_message_id=receipt.message_id)
        if not claimed:
            self._update(key, status="sending", attempts=attempt, attempted_at=utcnow())
        try:
            with PROVIDER_LATENCY.labels(provider.name).time():
                receipt = provider.deliver(outgoing)
        except DeliveryError as err:
            if err.permanent:
                self._finish(row, status="failed", error=str(err))
                raise ApplicationError(
                    str(err), type="DeliveryRejected", non_retryable=True
                ) from err
            if last_call:
                return self._give_up(row, outgoing, provider, err, attempt)
            # Not accepted (429, 5xx, refused): back to pending. In doubt: stays `sending`,
            # so the next attempt reconciles before sending again.
            self._update(key, status="sending" if err.in_doubt else "pending", error=str(err))
            delay = None
            if err.retry_after is not None:
                delay = min(timedelta(seconds=err.retry_after), MAX_RETRY_AFTER)
            raise ApplicationError(
                str(err),
                type="DeliveryInDoubt" if err.in_doubt else "DeliveryUnavailable",
                next_retry_delay=delay,
            ) from err
        return self._finish(row, status="sent", provider_message_id=receipt.message_id, error=None)

    def _give_up(
        self,
        row: Message,
        outgoing: OutgoingMessage,
        provider: Provider,
        err: DeliveryError,
        attempts: int,
    ) -> SendResult:
        if err.in_doubt:
            # One last look before the workflow sends the fallback.
            try:
                found = provider.find(outgoing, _aware(row.created_at))
            except (NotImplementedError, DeliveryError):
                return self._finish(
                    row,
                    status="unknown",
                    error=f"outcome unknown after {attempts} attempts, not sent again: {err}",
                )
            if found is not None:
                return self._finish(row, status="sent", provider_message_id=found.message_id)
        self._finish(row, status="failed", error=f"gave up after {attempts} attempts: {err}")
        raise ApplicationError(str(err), type="DeliveryRejected", non_retryable=True) from err

    def _reconcile(
        self, row: Message, outgoing: OutgoingMessage, provider: Provider
    ) -> Receipt | None:
        """The provider's receipt for an attempt whose outcome is unknown, or None to send."""
        with Session(self.engine) as session:
            event = session.exec(
                select(MessageEvent)
                .where(col(MessageEvent.message_key) == row.key)
                .order_by(col(MessageEvent.at))
            ).first()
        if event is not None:
            return Receipt(event.provider, event.provider_message_id or row.key)
        since = _aware(row.attempted_at or row.created_at)
        try:
            return provider.find(outgoing, since)
        except NotImplementedError:
            waited = utcnow() - since
            if waited < self.reconcile_after:
                raise ApplicationError(
                    f"the outcome of the last attempt is unknown; waiting for {provider.name}'s "
                    "record of it before sending again",
                    type="DeliveryInDoubt",
                    next_retry_delay=self.reconcile_after - waited,
                ) from None
            activity.logger.warning(
                "no record of %s at %s after %s: sending again", row.key, provider.name, waited
            )
            return None
        except DeliveryError as err:
            raise ApplicationError(
                f"could not look the message up at {provider.name}: {err}",
                type="DeliveryUnavailable",
            ) from err

    def _read_at(self, key: str) -> datetime | None:
        """When the user read the in-app message of that key (None: unread, or never sent)."""
        with Session(self.engine) as session:
            row = session.get(Message, key)
            return _aware(row.read_at) if row is not None and row.read_at is not None else None

    def _opted_out(self, request: SendMessageInput) -> dict[str, str]:
        return unsubscribed(self.engine, request.user_id)

    def _write_row(
        self, request: SendMessageInput, context: dict[str, Any]
    ) -> tuple[Message, bool]:
        """The message's row, rendered and written; whether this call wrote it."""
        try:
            rendered = self.renderer.render(
                request.channel,
                request.message,
                request.persona,
                request.recipient.locale,
                context,
            )
        except TemplateProblem as err:
            raise ApplicationError(str(err), type="TemplateError", non_retryable=True) from err
        row = Message(
            key=request.key,
            workflow_id=request.workflow_id,
            user_id=request.user_id,
            step=f"{request.occurrence}/{request.channel}",
            message=request.message,
            channel=request.channel,
            category=request.category,
            persona=request.persona,
            locale=request.recipient.locale,
            recipient=self._address(request),
            subject=rendered.subject or rendered.title,
            html=rendered.html,
            text=rendered.text,
            template=rendered.template,
            content_hash=rendered.content_hash,
            provider=self._provider(request.channel).name,
            # Only in-app messages show a button; an email's call to action is in its body.
            cta_label=(rendered.cta_label or None) if request.channel == "in_app" else None,
            cta_url=(
                (rendered.cta_url or None)
                if request.channel == "in_app" and rendered.cta_label
                else None
            ),
        )
        # Written as what happens next: skipped, or `sending`, the provider called right after.
        skipped = self._skip_reason(request)
        if skipped is not None:
            row.status, row.error = "skipped", skipped
        else:
            row.status, row.attempts, row.attempted_at = "sending", 1, utcnow()
        # The row keeps what it was given and what the flush set (`updated_at`): no reload.
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                # Another attempt wrote it first: use that row, never a second one.
                session.rollback()
                existing = session.get(Message, request.key)
                assert existing is not None
                return existing, False
        return row, True

    def _update(self, key: str, **changes: Any) -> None:
        """One UPDATE of the changed columns (`updated_at` with them), without reading the row
        first: what other writers changed meanwhile (a webhook's delivery status) stays."""
        with Session(self.engine) as session:
            session.execute(update(Message).where(col(Message.key) == key).values(**changes))
            session.commit()

    def _finish(self, row: Message, **changes: Any) -> SendResult:
        """Settles the message `row` (as read or written by this attempt) with `changes`."""
        if changes.get("status") == "sent":
            changes["sent_at"] = utcnow()
        self._update(row.key, **changes)
        result = _result(row).model_copy(
            update={k: v for k, v in changes.items() if k in ("status", "provider_message_id")}
        )
        MESSAGES.labels(row.channel, result.status).inc()
        return result

    def _provider(self, channel: str) -> Provider:
        return self.providers[channel]

    def _address(self, request: SendMessageInput) -> str:
        if request.channel == "email":
            return request.recipient.email
        if request.channel == "sms":
            return request.recipient.phone or ""
        if request.channel == "support":
            return self._support_address()
        return request.user_id

    def _support_address(self) -> str:
        """Where support alerts go, as the row records it (a webhook's URL is a credential)."""
        if self._provider("support").name == "webhook":
            return "support webhook"
        return self.product.support_email

    def unsubscribe_url(self, user_id: str, channel: str) -> str | None:
        if self.tokens is None or not self.public_url or channel not in ("email", "in_app"):
            return None
        return f"{self.public_url}/v1/unsubscribe/{self.tokens.make(user_id, channel)}"

    def book_call_url(self, user_id: str) -> str | None:
        """The signed self-serve booking link (TRIALPATH_BOOKING_URL); None: the app's page."""
        if self.tokens is None or not self.booking_url:
            return None
        return booking_link(self.booking_url, self.tokens.secret, user_id)

    def survey_links(self, user_id: str, message: str) -> list[tuple[int, str]]:
        """One signed answer link per score, for survey messages."""
        survey = message.removeprefix("survey_")
        if self.tokens is None or not self.public_url or survey not in SURVEY_SCALES:
            return []
        token = SurveyTokens(self.tokens.secret).make(user_id, survey)
        base = f"{self.public_url}/v1/surveys/{token}"
        return [(n, f"{base}?score={n}") for n in range(1, SURVEY_SCALES[survey] + 1)]

    def _context(self, request: SendMessageInput) -> dict[str, Any]:
        call = request.call
        return message_context(
            product=self.product,
            channel=request.channel,
            message=request.message,
            user=request.recipient.model_dump(),
            persona=request.persona,
            trial=request.trial.model_dump(),
            call=call.model_dump() if call else None,
            alert=request.alert,
            unsubscribe_url=self.unsubscribe_url(request.user_id, request.channel),
            survey_links=self.survey_links(request.user_id, request.message),
            book_call_url=self.book_call_url(request.user_id),
        )

    def _outgoing(
        self, request: SendMessageInput, row: Message, context: dict[str, Any] | None = None
    ) -> OutgoingMessage:
        """What the provider gets; `context`: the one the row was rendered with, when this
        attempt rendered it (it holds the signed links)."""
        context = context if context is not None else self._context(request)
        headers: dict[str, str] = {}
        if row.category == "marketing" and row.channel == "email":
            headers["List-Unsubscribe"] = f"<{context['links']['unsubscribe']}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        attachments: tuple[Attachment, ...] = ()
        if request.message in ICS_MESSAGES and request.channel == "email" and request.call:
            attachments = (
                Attachment("invite.ics", "text/calendar", call_invitation(request, self.product)),
            )
        title = row.subject if row.channel == "in_app" else ""
        return OutgoingMessage(
            key=row.key,
            channel=row.channel,
            category=row.category,
            sender=self.sender,
            recipient=row.recipient,
            subject=row.subject,
            html=row.html,
            text=row.text,
            title=title,
            cta_label=row.cta_label or "",
            cta_url=row.cta_url or "",
            headers=headers,
            attachments=attachments,
            user_id=request.user_id,
            trial_id=request.workflow_id,
            message=request.message,
            persona=request.persona,
        )

    @activity.defn(name="alert_template_failure")
    def alert_template_failure(self, failure: TemplateFailure) -> SendResult:
        """Tells support a template is broken. Built here, not from a template: the templates
        may be what is broken. One alert per failed attempt, however often this is retried."""
        key = (
            f"{failure.workflow_id}:{failure.occurrence}/{failure.channel}"
            f"/template-failure.{failure.attempt}"
        )
        activity.logger.error(
            "template failure for %s: %s", key.split("/template-failure")[0], failure.error
        )
        with Session(self.engine) as session:
            row = session.get(Message, key)
        if row is None:
            retry = (
                f"It will be tried again at {failure.retry_at:%Y-%m-%d %H:%M} UTC; fix the "
                "template before then and the user gets the corrected message."
                if failure.retry_at
                else f"It will not be tried again: {failure.gave_up or 'the retries are used up'}."
            )
            attempt = f"attempt {failure.attempt}" if failure.attempt else "given up"
            text = (
                f"The {failure.channel} message '{failure.message}' for user {failure.user_id} "
                f"could not be rendered ({attempt}), so it was not sent.\n\n"
                f"{failure.error}\n\n{retry}\n\n"
                "Run `trialpath templates check` to see every problem, and "
                "`trialpath templates preview` to look at the messages."
            )
            row = Message(
                key=key,
                workflow_id=failure.workflow_id,
                user_id=failure.user_id,
                step=f"{failure.occurrence}/{failure.channel}/template-failure.{failure.attempt}",
                message="template_failure",
                channel="support",
                category="transactional",
                recipient=self._support_address(),
                subject=f"Template error: {failure.message} ({failure.channel}) not sent",
                html=f"<pre>{html.escape(text)}</pre>",
                text=text,
                template="(built-in)",
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                provider=self._provider("support").name,
            )
            with Session(self.engine) as session:
                session.add(row)
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()  # Written by a concurrent attempt: use that row.
            with Session(self.engine) as session:
                found = session.get(Message, key)
                assert found is not None
                row = found
        if row.status in FINAL_STATUSES:
            return _result(row)
        outgoing = OutgoingMessage(
            key=row.key,
            channel="support",
            category="transactional",
            sender=self.sender,
            recipient=row.recipient,
            subject=row.subject,
            html=row.html,
            text=row.text,
            user_id=failure.user_id,
            trial_id=failure.workflow_id,
            message="template_failure",
        )
        try:
            return self._hand_over(row, outgoing, self._provider("support"))
        except ApplicationError as err:
            if err.type != "DeliveryRejected":
                raise
            # Refused for good (a webhook removed, its channel archived): the row says so. The
            # workflow awaits this activity without expecting it to fail, and an activity
            # failure there would fail the whole trial.
            with Session(self.engine) as session:
                refused = session.get(Message, key)
                assert refused is not None
                return _result(refused).model_copy(update={"error": refused.error})


def _result(row: Message) -> SendResult:
    return SendResult(
        key=row.key,
        channel=row.channel,
        template=row.template,
        content_hash=row.content_hash,
        status=row.status,
        provider_message_id=row.provider_message_id,
    )


def _aware(at: datetime) -> datetime:
    """SQLite gives back naive datetimes for UTC columns."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
