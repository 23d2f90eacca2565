"""The dashboard's session cookie: its name and lifetime, `Sessions` that sign it with a
fingerprint of the key it came from (`key_id`), and the filter that keeps `?key=` out of
uvicorn's access log."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Sequence

from itsdangerous import BadSignature, URLSafeTimedSerializer

from trialpath.operations.access import ApiKey

COOKIE = "trialpath_dashboard"
SESSION_SECONDS = 12 * 3600


def key_id(key: str) -> str:
    """What the cookie names instead of the key: enough to tell keys apart, useless to log in."""
    return hashlib.sha256(b"trialpath-dashboard\0" + key.encode()).hexdigest()[:32]


class Sessions:
    """Signed session cookies (itsdangerous), valid 12 hours, tied to the key they came from."""

    def __init__(self, secret: str, max_age: int = SESSION_SECONDS) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="trialpath-dashboard")
        self.max_age = max_age

    def make(self, key: ApiKey) -> str:
        return str(self._serializer.dumps({"k": key_id(key.secret.get_secret_value())}))

    def key(self, cookie: str, keys: Sequence[ApiKey]) -> ApiKey | None:
        """The key the session was opened with, if it is still configured."""
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("k"), str):
            return None
        found = None
        for key in keys:
            if hmac.compare_digest(data["k"], key_id(key.secret.get_secret_value())):
                found = key
        return found


class _RedactKey(logging.Filter):
    """Keeps `?key=` out of uvicorn's access log, where the request line is written whole."""

    pattern = re.compile(r"([?&]key=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.pattern.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


_access_log = logging.getLogger("uvicorn.access")
if not any(isinstance(f, _RedactKey) for f in _access_log.filters):
    _access_log.addFilter(_RedactKey())
