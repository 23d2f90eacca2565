"""The `outbox` provider: writes each message as a file under `.data/outbox/`.

Emails become `.eml` files any mail client opens (HTML + text + attachments); SMS and in-app
messages become `.txt` files. Writing the same key twice rewrites the same file. A file is
written under a temporary name and renamed into place, so a worker killed mid-write leaves no
partial message for `find` to take as delivered.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from trialpath.delivery import OutgoingMessage, Receipt

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(key: str) -> str:
    return _UNSAFE.sub("_", key)


class OutboxProvider:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def deliver(self, message: OutgoingMessage) -> Receipt:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = file_stem(message.key)
        if message.channel in ("email", "support"):
            path = self.directory / f"{stem}.eml"
            data = to_email(message).as_bytes()
        else:
            path = self.directory / f"{stem}.txt"
            data = to_text(message).encode("utf-8")
        write_atomically(path, data)
        return Receipt(provider=self.name, message_id=path.name)

    def find(self, message: OutgoingMessage, since: datetime) -> Receipt | None:
        stem = file_stem(message.key)
        for suffix in (".eml", ".txt"):
            if (self.directory / f"{stem}{suffix}").exists():
                return Receipt(provider=self.name, message_id=f"{stem}{suffix}")
        return None


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds either its old content or all of `data`, whenever the process dies."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def to_email(message: OutgoingMessage) -> EmailMessage:
    # Long URL headers (List-Unsubscribe) must not be folded into RFC 2047 encoded words.
    email = EmailMessage(policy=policy.default.clone(max_line_length=998))
    email["From"] = message.sender
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email["Message-ID"] = make_msgid(idstring=file_stem(message.key)[-40:], domain="trialpath")
    email["X-Trialpath-Key"] = message.key
    for name, value in message.headers.items():
        email[name] = value
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    for item in message.attachments:
        maintype, _, subtype = item.content_type.partition("/")
        email.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename)
    return email


def to_text(message: OutgoingMessage) -> str:
    lines = [f"To: {message.recipient}", f"Channel: {message.channel}", f"Key: {message.key}"]
    if message.title:
        lines.append(f"Title: {message.title}")
    if message.cta_label:
        lines.append(f"Button: {message.cta_label} -> {message.cta_url}")
    return "\n".join(lines) + "\n\n" + message.text + "\n"
