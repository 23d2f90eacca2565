"""The `smtp` provider: hands each email to an SMTP relay (a local Postfix, a provider's relay).

The steps are taken one by one (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA) so a failure
is classified by where it happened:

- before MAIL (greeting, TLS, login): the relay is unreachable or misconfigured, never this
  message's fault, so always transient;
- MAIL, RCPT, DATA and the reply to the message body: 5xx is a refusal of this message
  (permanent, with the relay's reply), 4xx a deferral (transient);
- once the whole body is sent, a timeout or dropped connection leaves the outcome unknown: the
  relay may have queued the message (`in_doubt`).

A relay cannot be asked afterwards whether it took a message, so `find` is not implemented.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from datetime import datetime
from email.policy import EmailPolicy
from email.utils import parseaddr
from typing import Literal, get_args

from trialpath.delivery import DeliveryError, OutgoingMessage, Receipt
from trialpath.delivery.outbox import to_email

Security = Literal["none", "starttls", "tls"]

_LINE_START_DOT = re.compile(rb"^\.", re.MULTILINE)


class SmtpProvider:
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        security: Security = "none",
        timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in get_args(Security):
            raise ValueError(f"unknown SMTP security {security!r}, expected none, starttls or tls")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.security = security
        self.timeout = timeout
        self.ssl_context = ssl_context
        """Verifies the relay's certificate; None means the system's trusted CAs."""

    def __repr__(self) -> str:
        return f"SmtpProvider({self.host!r}, {self.port}, security={self.security!r})"

    def deliver(self, message: OutgoingMessage) -> Receipt:
        email = to_email(message)
        message_id = str(email["Message-ID"])
        sender = parseaddr(message.sender)[1] or message.sender
        recipient = parseaddr(message.recipient)[1] or message.recipient
        assert isinstance(email.policy, EmailPolicy)
        policy = email.policy.clone(linesep="\r\n")  # SMTP's line ends
        smtp: smtplib.SMTP | None = None
        envelope_started = False
        body_sent = False
        try:
            smtp = self._open()
            envelope_started = True
            options: list[str] = []
            if not (sender.isascii() and recipient.isascii()):
                if not smtp.has_extn("smtputf8"):
                    raise DeliveryError(
                        f"{self._where} does not support SMTPUTF8, needed to send from "
                        f"{sender} to {recipient}",
                        permanent=True,
                    )
                options += ["SMTPUTF8", "BODY=8BITMIME"]
                data = email.as_bytes(policy=policy.clone(utf8=True))
            else:
                data = email.as_bytes(policy=policy)
                if not data.isascii():
                    if smtp.has_extn("8bitmime"):
                        options.append("BODY=8BITMIME")
                    else:
                        # A relay without 8BITMIME may mangle 8-bit text: base64 it instead.
                        data = email.as_bytes(policy=policy.clone(cte_type="7bit"))

            code, reply = smtp.mail(sender, options)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
            code, reply = smtp.docmd("DATA")
            if code != 354:
                raise smtplib.SMTPDataError(code, reply)
            smtp.send(_dot_stuffed(data))
            # The terminating dot is out: from here the relay may queue the message even if
            # its reply never reaches us.
            body_sent = True
            code, reply = smtp.getreply()
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as err:
            code, reply = next(iter(err.recipients.values()))
            raise self._refused(f"refused the recipient {recipient}", code, reply) from err
        except smtplib.SMTPResponseException as err:
            if not envelope_started or isinstance(err, smtplib.SMTPAuthenticationError):
                # Greeting, EHLO, STARTTLS or AUTH refused (a wrong password included): the
                # relay or our settings are at fault, not this message. Transient, so the
                # message goes out once the configuration is fixed instead of being lost.
                raise DeliveryError(
                    f"{self._where} could not be used: {_reply(err.smtp_code, err.smtp_error)}",
                    permanent=False,
                    status=err.smtp_code,
                ) from err
            refused = isinstance(err, smtplib.SMTPSenderRefused)
            what = f"refused the sender {sender}" if refused else "refused the message"
            raise self._refused(what, err.smtp_code, err.smtp_error) from err
        except (smtplib.SMTPException, OSError) as err:
            # Refused or dropped connections, timeouts, TLS failures, AUTH not offered.
            # SMTPServerDisconnected also covers timeouts: smtplib turns them into it.
            if body_sent:
                raise DeliveryError(
                    f"{self._where} did not confirm the message after receiving it: "
                    f"{_describe(err)}",
                    permanent=False,
                    in_doubt=True,
                ) from err
            raise DeliveryError(
                f"{self._where} unavailable: {_describe(err)}", permanent=False
            ) from err
        finally:
            if smtp is not None:
                _close(smtp)
        return Receipt(provider=self.name, message_id=message_id)

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        raise NotImplementedError("an SMTP relay cannot be asked whether it accepted a message")

    @property
    def _where(self) -> str:
        return f"SMTP relay {self.host}:{self.port}"

    def _open(self) -> smtplib.SMTP:
        """A connection ready for MAIL: greeted, encrypted as configured, logged in."""
        context = self.ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password)
        except BaseException:
            _close(smtp)
            raise
        return smtp

    def _refused(self, what: str, code: int, reply: bytes | str) -> DeliveryError:
        # 530 (authentication required) is our misconfiguration, like a failed login.
        permanent = 500 <= code < 600 and code != 530
        return DeliveryError(
            f"{self._where} {what}: {_reply(code, reply)}", permanent=permanent, status=code
        )


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: lines starting with a dot doubled, ended by a line with one dot."""
    data = _LINE_START_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return f"{code} {' '.join(text.split())}"


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


def _close(smtp: smtplib.SMTP) -> None:
    # QUIT is a courtesy: the outcome is already known, and a dead connection fails fast.
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.quit()
    smtp.close()
