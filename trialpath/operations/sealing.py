"""Personal data encrypted at rest, for a database that is not trusted (a managed server,
its backups, whoever reads them).

With `TRIALPATH_ENCRYPT_AT_REST=true`, the columns that hold what a person is or wrote (the
trial's name, email and phone; each message's recipient, subject, bodies and provider error;
request bodies kept for idempotency; signals waiting to be delivered; providers' webhook
bodies) are written as `sealed:v1:<key id>:<base64>`: AES-256-GCM with the codec keys
(`TRIALPATH_CODEC_KEYS`, see trialpath/operations/codec.py), a random nonce per value, and the
column's name authenticated with it, so a value copied into another column does not decrypt.

Reading is transparent for whoever has the keys: every key decrypts, the first encrypts, so
keys rotate as the codec's do; `trialpath db seal` rewrites the rows with the first key (and
seals the rows written before encryption was turned on, which are read as they are until
then). Without the keys a sealed value is an error naming the setting, never ciphertext shown
as data.

What stays in the clear: ids, stages, times and counters (the KPIs are computed in SQL from
them), and the columns queries filter on. An SMS reply is matched to its trial by comparing
decrypted numbers (no index can be built on a value encrypted with a random nonce).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import JSON, Column, Engine, String, Table, TypeDecorator, select, update
from sqlalchemy.engine import Dialect

from trialpath.operations.codec import NONCE_BYTES, CodecKey, keys_from_settings
from trialpath.operations.config import Settings, SettingsError

PREFIX = "sealed:v1:"
_JSON_KEY = "sealed"


class SealedDataError(RuntimeError):
    """A sealed value cannot be read: no keys, an unknown key id, or altered."""


class Sealer:
    """Seals and opens column values with the codec keys."""

    def __init__(self, keys: Sequence[CodecKey], *, seals: bool = True) -> None:
        if not keys:
            raise SettingsError(
                "TRIALPATH_ENCRYPT_AT_REST needs TRIALPATH_CODEC_KEYS (or _FILE): "
                "generate one with `trialpath codec-server --new-key`"
            )
        self.key_id = keys[0].id
        self._ciphers = {key.id: AESGCM(key.secret) for key in keys}
        self.seals = seals
        """Seal what is written; False: only open what was sealed (encryption turned off)."""

    def seal(self, text: str, column: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(
            nonce, text.encode(), _associated(column, self.key_id)
        )
        return f"{PREFIX}{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, column: str) -> str:
        key_id, sep, encoded = value.removeprefix(PREFIX).partition(":")
        cipher = self._ciphers.get(key_id)
        if not sep or cipher is None:
            raise SealedDataError(
                f"{column} was encrypted with key {key_id!r}, which is not in "
                f"TRIALPATH_CODEC_KEYS (it has {', '.join(self._ciphers)})"
            )
        try:
            raw = base64.urlsafe_b64decode(encoded)
            associated = _associated(column, key_id)
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
        except (binascii.Error, ValueError, InvalidTag):
            raise SealedDataError(
                f"a value of {column} does not decrypt: altered, or not this column's"
            ) from None
        return plain.decode()

    @staticmethod
    def is_sealed(value: object) -> bool:
        return isinstance(value, str) and value.startswith(PREFIX)


def _associated(column: str, key_id: str) -> bytes:
    return f"{column}\x00{key_id}".encode()


def sealer_for(settings: Settings) -> Sealer | None:
    """The settings' sealer: sealing with TRIALPATH_ENCRYPT_AT_REST, else only opening what
    was sealed while it was on (when there are codec keys), else None."""
    keys = keys_from_settings(settings)
    if settings.encrypt_at_rest:
        return Sealer(keys)
    return Sealer(keys, seals=False) if keys else None


_SEALERS: weakref.WeakKeyDictionary[Dialect, Sealer] = weakref.WeakKeyDictionary()


def attach(engine: Engine, sealer: Sealer | None) -> None:
    """Seal what `engine` writes to the personal columns (None: write them as they are)."""
    if sealer is None:
        _SEALERS.pop(engine.dialect, None)
    else:
        _SEALERS[engine.dialect] = sealer


def _opener(dialect: Dialect, column: str) -> Sealer:
    sealer = _SEALERS.get(dialect)
    if sealer is None:
        raise SealedDataError(
            f"{column} is encrypted at rest: set TRIALPATH_ENCRYPT_AT_REST=true and the codec "
            "keys (TRIALPATH_CODEC_KEYS) to read it"
        )
    return sealer


class SealedString(TypeDecorator[str]):
    """A string column sealed when the engine has a sealer (see `attach`)."""

    impl = String
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        sealer = _SEALERS.get(dialect)
        if value is None or sealer is None or not sealer.seals or Sealer.is_sealed(value):
            return value
        return sealer.seal(value, self.column)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not Sealer.is_sealed(value):
            return value
        return _opener(dialect, self.column).open(value, self.column)


class SealedJSON(TypeDecorator[Any]):
    """A JSON column sealed as `{"sealed": "sealed:v1:..."}` when the engine has a sealer."""

    impl = JSON
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        sealer = _SEALERS.get(dialect)
        if value is None or sealer is None or not sealer.seals or _sealed_document(value):
            return value
        return {_JSON_KEY: sealer.seal(json.dumps(value), self.column)}

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if not _sealed_document(value):
            return value
        return json.loads(_opener(dialect, self.column).open(value[_JSON_KEY], self.column))


def _sealed_document(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and Sealer.is_sealed(value.get(_JSON_KEY))


def sealed_columns() -> dict[Table, list[Column[Any]]]:
    """Every table with personal data columns, and those columns."""
    from sqlmodel import SQLModel

    found: dict[Table, list[Column[Any]]] = {}
    for table in SQLModel.metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, SealedString | SealedJSON)]
        if columns:
            found[table] = columns
    return found


def rewrite(engine: Engine, table: Table, batch: int = 500) -> Iterator[int]:
    """Rewrites `table`'s personal data columns as `engine`'s sealer says (sealed with its
    first key, or in the clear when it only opens), `batch` rows per transaction; yields the
    number of rows of each batch. Rows already as they should be are written again too: the
    command is for a rare change of keys or settings, and stays simple and idempotent."""
    columns = sealed_columns()[table]
    (key,) = table.primary_key.columns
    last: Any = None
    while True:
        with engine.begin() as connection:
            query = select(key, *columns).order_by(key).limit(batch)
            if last is not None:
                query = query.where(key > last)
            rows = connection.execute(query).all()
            for row in rows:
                values = {column.name: row[i + 1] for i, column in enumerate(columns)}
                connection.execute(update(table).where(key == row[0]).values(values))
        if not rows:
            return
        last = rows[-1][0]
        yield len(rows)
