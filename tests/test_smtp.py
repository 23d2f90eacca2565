"""The SMTP provider against real SMTP servers on 127.0.0.1 (aiosmtpd, and a raw socket one
for misbehaviour aiosmtpd cannot produce): what arrives, and how each failure is classified."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer, AuthResult, Envelope, LoginPassword, Session

from trialpath.delivery import Attachment, DeliveryError, OutgoingMessage
from trialpath.delivery.smtp import SmtpProvider
from trialpath.operations.ports import free_port

ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


def outgoing(**overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "key": "trial-42/welcome/email",
        "channel": "email",
        "category": "onboarding",
        "sender": "Acme <onboarding@acme.example>",
        "recipient": "ada@example.com",
        "subject": "Welcome to Acme",
        "html": "<p>Bienvenue à bord, Ada</p>",
        # A line starting with a dot must survive SMTP's dot-stuffing.
        "text": "Bienvenue à bord, Ada\n.this line starts with a dot\n",
        "headers": {
            "List-Unsubscribe": "<https://app.acme.example/unsubscribe?t=abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "attachments": (Attachment("kickoff.ics", "text/calendar", ICS),),
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


class Relay:
    """An aiosmtpd handler that keeps what it accepts and answers as it is told."""

    def __init__(
        self,
        *,
        mail_reply: str | None = None,
        rcpt_reply: str | None = None,
        data_reply: str = "250 2.0.0 queued",
        data_delay: float = 0.0,
    ) -> None:
        self.mail_reply = mail_reply
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.data_delay = data_delay
        self.envelopes: list[Envelope] = []

    async def handle_MAIL(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply.startswith("250"):
            self.envelopes.append(envelope)
        return self.data_reply

    def received(self) -> EmailMessage:
        (envelope,) = self.envelopes
        assert isinstance(envelope.original_content, bytes)
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


StartRelay = Callable[..., Controller]


@pytest.fixture
def start_relay() -> Iterator[StartRelay]:
    """Starts aiosmtpd controllers on free ports; all of them are stopped after the test."""
    started: list[Controller] = []

    def start(handler: Relay, **kwargs: Any) -> Controller:
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def raw_server() -> Iterator[Callable[[bytes], int]]:
    """A socket server that sends fixed bytes to each connection, then hangs up."""
    sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(greeting: bytes) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)

        def serve() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = listener.accept()
                    with conn:
                        conn.sendall(greeting)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        port: int = listener.getsockname()[1]
        return port

    yield start
    for listener in sockets:
        # shutdown() wakes the blocked accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate, private key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


# Plain-text AUTH against a local test relay is what these tests want.
no_tls_auth_warning = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning"
)


def check_password(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"relay-user", b"s3cret")
    return AuthResult(success=ok, handled=False)


def test_delivers_the_mime_message_and_returns_its_message_id(start_relay: StartRelay) -> None:
    relay = Relay()
    controller = start_relay(relay)
    provider = SmtpProvider("127.0.0.1", controller.port, timeout=5)

    receipt = provider.deliver(outgoing())

    (envelope,) = relay.envelopes
    assert envelope.mail_from == "onboarding@acme.example"
    assert envelope.rcpt_tos == ["ada@example.com"]
    assert "BODY=8BITMIME" in envelope.mail_options  # the text is not ASCII
    email = relay.received()
    assert email["From"] == "Acme <onboarding@acme.example>"
    assert email["To"] == "ada@example.com"
    assert email["Subject"] == "Welcome to Acme"
    assert email["X-Trialpath-Key"] == "trial-42/welcome/email"
    assert email["List-Unsubscribe"] == "<https://app.acme.example/unsubscribe?t=abc>"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert receipt.provider == "smtp"
    assert receipt.message_id == email["Message-ID"]
    assert receipt.message_id.startswith("<") and receipt.message_id.endswith("@trialpath>")

    assert email.get_content_type() == "multipart/mixed"
    alternative, attachment = email.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in alternative.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    text = email.get_body(preferencelist=("plain",))
    html = email.get_body(preferencelist=("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    # 8-bit text travels as is, with SMTP's CRLF line ends.
    assert text.get_content().splitlines() == [
        "Bienvenue à bord, Ada",
        ".this line starts with a dot",
    ]
    assert html.get_content().strip() == "<p>Bienvenue à bord, Ada</p>"
    assert isinstance(attachment, EmailMessage)
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_filename() == "kickoff.ics"
    assert attachment.get_content() == ICS.decode()


def test_relay_without_8bitmime_gets_seven_bit_content(start_relay: StartRelay) -> None:
    relay = Relay()
    # decode_data=True makes aiosmtpd stop advertising 8BITMIME.
    controller = start_relay(relay, decode_data=True)

    SmtpProvider("127.0.0.1", controller.port, timeout=5).deliver(outgoing())

    (envelope,) = relay.envelopes
    assert isinstance(envelope.original_content, bytes)
    assert envelope.original_content.isascii()
    assert envelope.mail_options == []
    text = relay.received().get_body(preferencelist=("plain",))
    assert isinstance(text, EmailMessage)
    assert text.get_content().startswith("Bienvenue à bord")


def test_international_address_uses_smtputf8(start_relay: StartRelay) -> None:
    relay = Relay()
    controller = start_relay(relay)

    SmtpProvider("127.0.0.1", controller.port, timeout=5).deliver(
        outgoing(recipient="jörg@example.com")
    )

    (envelope,) = relay.envelopes
    assert envelope.rcpt_tos == ["jörg@example.com"]
    assert "SMTPUTF8" in envelope.mail_options
    assert relay.received()["To"] == "jörg@example.com"


def test_international_address_without_smtputf8_is_permanent(start_relay: StartRelay) -> None:
    controller = start_relay(Relay(), enable_SMTPUTF8=False)
    provider = SmtpProvider("127.0.0.1", controller.port, timeout=5)

    with pytest.raises(DeliveryError, match="SMTPUTF8") as caught:
        provider.deliver(outgoing(recipient="jörg@example.com"))

    assert caught.value.permanent


def test_unknown_recipient_is_permanent_with_the_relays_reply(start_relay: StartRelay) -> None:
    relay = Relay(rcpt_reply="550 5.1.1 no such user")
    controller = start_relay(relay)
    provider = SmtpProvider("127.0.0.1", controller.port, timeout=5)

    with pytest.raises(DeliveryError) as caught:
        provider.deliver(outgoing())

    err = caught.value
    assert err.permanent
    assert not err.in_doubt
    assert err.status == 550
    assert "550 5.1.1 no such user" in str(err)
    assert "ada@example.com" in str(err)
    assert relay.envelopes == []


def test_refused_sender_is_permanent(start_relay: StartRelay) -> None:
    controller = start_relay(Relay(mail_reply="553 5.7.1 sender not allowed"))
    provider = SmtpProvider("127.0.0.1", controller.port, timeout=5)

    with pytest.raises(DeliveryError, match=r"553 5\.7\.1 sender not allowed") as caught:
        provider.deliver(outgoing())

    assert caught.value.permanent
    assert caught.value.status == 553


def test_deferral_after_data_is_transient_and_not_in_doubt(start_relay: StartRelay) -> None:
    relay = Relay(data_reply="451 4.3.0 try later")
    controller = start_relay(relay)
    provider = SmtpProvider("127.0.0.1", controller.port, timeout=5)

    with pytest.raises(DeliveryError, match=r"451 4\.3\.0 try later") as caught:
        provider.deliver(outgoing())

    err = caught.value
    assert not err.permanent
    assert not err.in_doubt
    assert err.status == 451


def test_rejection_after_data_is_permanent(start_relay: StartRelay) -> None:
    controller = start_relay(Relay(data_reply="554 5.7.1 message looks like spam"))
    provider = SmtpProvider("127.0.0.1", controller.port, timeout=5)

    with pytest.raises(DeliveryError, match="looks like spam") as caught:
        provider.deliver(outgoing())

    assert caught.value.permanent
    assert caught.value.status == 554


def test_closed_port_is_transient_and_not_in_doubt() -> None:
    provider = SmtpProvider("127.0.0.1", free_port(), timeout=2)

    with pytest.raises(DeliveryError) as caught:
        provider.deliver(outgoing())

    err = caught.value
    assert not err.permanent
    assert not err.in_doubt
    assert err.status is None


def test_disconnect_before_data_is_transient_and_not_in_doubt(
    raw_server: Callable[[bytes], int],
) -> None:
    port = raw_server(b"220 relay.example ESMTP\r\n")  # then hangs up

    with pytest.raises(DeliveryError) as caught:
        SmtpProvider("127.0.0.1", port, timeout=2).deliver(outgoing())

    assert not caught.value.permanent
    assert not caught.value.in_doubt


def test_refusing_greeting_is_transient(raw_server: Callable[[bytes], int]) -> None:
    port = raw_server(b"554 5.3.2 no service for you\r\n")

    with pytest.raises(DeliveryError, match="no service for you") as caught:
        SmtpProvider("127.0.0.1", port, timeout=2).deliver(outgoing())

    assert not caught.value.permanent
    assert not caught.value.in_doubt
    assert caught.value.status == 554


def test_stall_after_the_message_was_sent_is_in_doubt(start_relay: StartRelay) -> None:
    relay = Relay(data_delay=3.0)
    controller = start_relay(relay)
    provider = SmtpProvider("127.0.0.1", controller.port, timeout=0.5)

    with pytest.raises(DeliveryError) as caught:
        provider.deliver(outgoing())

    err = caught.value
    assert err.in_doubt
    assert not err.permanent
    assert "did not confirm" in str(err)


@no_tls_auth_warning
def test_login(start_relay: StartRelay) -> None:
    relay = Relay()
    controller = start_relay(
        relay, authenticator=check_password, auth_require_tls=False, auth_required=True
    )

    SmtpProvider(
        "127.0.0.1", controller.port, username="relay-user", password="s3cret", timeout=5
    ).deliver(outgoing())

    assert len(relay.envelopes) == 1


@no_tls_auth_warning
def test_wrong_password_is_transient(start_relay: StartRelay) -> None:
    relay = Relay()
    controller = start_relay(
        relay, authenticator=check_password, auth_require_tls=False, auth_required=True
    )
    provider = SmtpProvider(
        "127.0.0.1", controller.port, username="relay-user", password="wrong", timeout=5
    )

    with pytest.raises(DeliveryError) as caught:
        provider.deliver(outgoing())

    assert not caught.value.permanent
    assert caught.value.status == 535
    assert relay.envelopes == []


@no_tls_auth_warning
def test_missing_login_is_transient(start_relay: StartRelay) -> None:
    controller = start_relay(
        Relay(), authenticator=check_password, auth_require_tls=False, auth_required=True
    )

    with pytest.raises(DeliveryError) as caught:
        SmtpProvider("127.0.0.1", controller.port, timeout=5).deliver(outgoing())

    assert not caught.value.permanent
    assert caught.value.status == 530


def test_starttls_with_login(start_relay: StartRelay, certificate: tuple[Path, Path]) -> None:
    relay = Relay()
    controller = start_relay(
        relay,
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=check_password,
        auth_required=True,
    )
    provider = SmtpProvider(
        "127.0.0.1",
        controller.port,
        username="relay-user",
        password="s3cret",
        security="starttls",
        ssl_context=client_context(certificate),
        timeout=5,
    )

    provider.deliver(outgoing())

    assert len(relay.envelopes) == 1


def test_implicit_tls(start_relay: StartRelay, certificate: tuple[Path, Path]) -> None:
    relay = Relay()
    controller = start_relay(relay, ssl_context=server_context(certificate))
    provider = SmtpProvider(
        "127.0.0.1",
        controller.port,
        security="tls",
        ssl_context=client_context(certificate),
        timeout=5,
    )

    provider.deliver(outgoing())

    assert len(relay.envelopes) == 1


def test_untrusted_certificate_is_transient(
    start_relay: StartRelay, certificate: tuple[Path, Path]
) -> None:
    controller = start_relay(Relay(), ssl_context=server_context(certificate))
    # The system's CAs do not know this self-signed certificate.
    provider = SmtpProvider("127.0.0.1", controller.port, security="tls", timeout=5)

    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        provider.deliver(outgoing())

    assert not caught.value.permanent
    assert not caught.value.in_doubt


def test_find_is_not_possible() -> None:
    provider = SmtpProvider("127.0.0.1", 25)

    with pytest.raises(NotImplementedError, match="cannot be asked"):
        provider.find(outgoing(), dt.datetime.now(dt.UTC))


def test_unknown_security_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown SMTP security"):
        SmtpProvider("127.0.0.1", 25, security="ssl")  # type: ignore[arg-type]
