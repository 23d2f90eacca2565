"""Encrypting workflow payloads (AES-256-GCM) before they reach the Temporal server.

Every payload the client or worker sends (workflow inputs, activity inputs and results,
signals, queries, memos, failure messages) is replaced by one whose data is the encrypted
original and whose metadata says `encoding: binary/encrypted` and which key encrypted it
(`encryption-key-id`). The server, its database and anyone reading history without the keys
see neither the user's name nor their address.

Keys come from `TRIALPATH_CODEC_KEYS` (or the file named by `TRIALPATH_CODEC_KEYS_FILE`):
`id:base64key` entries separated by commas or new lines. The first key encrypts; every key
decrypts, so a key is rotated by putting a new one first and removing the old one only when no
history that it encrypted is still needed. No keys: payloads are stored as they are.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from trialpath.operations.config import Settings, SettingsError

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class CodecKeyError(SettingsError):
    """The configured keys are unusable, or a payload needs a key that is not configured."""


class CodecError(ValueError):
    """A payload could not be decrypted: altered, or encrypted with another key of that id."""


@dataclass(frozen=True)
class CodecKey:
    id: str
    secret: bytes

    def __repr__(self) -> str:  # Never print the secret, even in a traceback.
        return f"CodecKey(id={self.id!r})"


def new_key() -> str:
    """A fresh random key, base64, for `TRIALPATH_CODEC_KEYS=<id>:<key>`."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_keys(text: str, source: str = "TRIALPATH_CODEC_KEYS") -> list[CodecKey]:
    """`id:base64key` entries separated by commas or new lines; `#` starts a comment line."""
    keys: list[CodecKey] = []
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    for number, entry in enumerate(
        (e.strip() for e in ",".join(lines).split(",") if e.strip()), start=1
    ):
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not key_id or not encoded.strip():
            raise CodecKeyError(
                f"{source}: entry {number} is not `id:base64key` "
                "(generate a key with `trialpath codec-server --new-key`)"
            )
        if not _KEY_ID_PATTERN.fullmatch(key_id):
            raise CodecKeyError(
                f"{source}: key id {key_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        try:
            secret = base64.b64decode(encoded.strip(), altchars=b"-_", validate=True)
        except binascii.Error:
            raise CodecKeyError(f"{source}: key {key_id!r} is not valid base64") from None
        if len(secret) != KEY_BYTES:
            raise CodecKeyError(
                f"{source}: key {key_id!r} is {len(secret)} bytes; AES-256 needs {KEY_BYTES}"
            )
        if any(k.id == key_id for k in keys):
            raise CodecKeyError(f"{source}: key id {key_id!r} appears twice")
        keys.append(CodecKey(key_id, secret))
    return keys


def keys_from_settings(settings: Settings) -> list[CodecKey]:
    """The keys from `TRIALPATH_CODEC_KEYS`, else from the file `TRIALPATH_CODEC_KEYS_FILE`."""
    inline = settings.codec_keys.get_secret_value()
    if inline.strip():
        if settings.codec_keys_file is not None:
            raise CodecKeyError("set TRIALPATH_CODEC_KEYS or TRIALPATH_CODEC_KEYS_FILE, not both")
        return parse_keys(inline)
    if settings.codec_keys_file is None:
        return []
    path = settings.codec_keys_file
    try:
        text = path.read_text()
    except OSError as err:
        raise CodecKeyError(
            f"TRIALPATH_CODEC_KEYS_FILE: cannot read {path}: {err.strerror}"
        ) from None
    keys = parse_keys(text, source=str(path))
    if not keys:
        raise CodecKeyError(f"TRIALPATH_CODEC_KEYS_FILE: {path} holds no key")
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM with a random 96-bit nonce per payload. The key id is authenticated too
    (associated data), so relabelling a payload with another key id fails to decrypt."""

    def __init__(self, keys: Sequence[CodecKey], require: bool = False) -> None:
        if not keys:
            raise CodecKeyError("an encryption codec needs at least one key")
        self.encrypting = keys[0]
        self._ciphers = {key.id: AESGCM(key.secret) for key in keys}
        self.require = require
        """Refuse unencrypted payloads instead of passing them through."""

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key = self.encrypting
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key.id].encrypt(nonce, payload.SerializeToString(), key.id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: key.id.encode()}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if self.require:
                raise CodecError(
                    "an unencrypted payload was refused (TRIALPATH_REQUIRE_ENCRYPTION): it was "
                    "not sent through Trialpath, whose clients encrypt everything"
                )
            # Payloads written before encryption was turned on stay readable.
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self._ciphers)
            raise CodecKeyError(
                f"payload was encrypted with key {key_id!r}, which is not configured "
                f"(TRIALPATH_CODEC_KEYS has: {known}); add it back to read this history"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise CodecError(
                f"payload encrypted with key {key_id!r} failed authentication: it was altered, "
                "or a different key now has that id"
            ) from None
        return Payload.FromString(plain)


def codec_from_settings(settings: Settings) -> EncryptionCodec | None:
    keys = keys_from_settings(settings)
    if not keys:
        if settings.require_encryption:
            raise CodecKeyError(
                "TRIALPATH_REQUIRE_ENCRYPTION is set but there are no codec keys "
                "(TRIALPATH_CODEC_KEYS or TRIALPATH_CODEC_KEYS_FILE)"
            )
        return None
    require = settings.require_encryption is not False
    return EncryptionCodec(keys, require=require)
