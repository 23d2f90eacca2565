"""Settings, read from `TRIALPATH_*` environment variables and `.env`."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trialpath.operations.access import ApiKey, parse_api_keys

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent.parent


ENV_PREFIX = "TRIALPATH_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Path(".data")
    database_url: str = ""
    """Any SQLAlchemy URL; empty means SQLite at `<data_dir>/trialpath.db`."""

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "trialpath"
    temporal_ui_port: int = 8233
    temporal_ui_url: str = ""
    """The Temporal UI as support reaches it (`https://cloud.temporal.io`); support alerts
    posted to a webhook then link to the trial's workflow there. Empty: no link."""
    temporal_tls_cert: Path | None = None
    """Client certificate (PEM) for mTLS to Temporal; with `temporal_tls_key`."""
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    """CA (PEM) that signed the server's certificate; empty: the system roots."""
    temporal_tls_server_name: str = ""
    temporal_api_key: SecretStr = SecretStr("")
    """Temporal Cloud API key (sent as a bearer token, over TLS)."""
    worker_shutdown_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM the worker stops polling and lets running activities finish this long."""
    worker_max_cached_workflows: int = Field(default=1000, ge=0)
    """Workflows kept in the worker's memory (sticky cache, about 0.25 MiB each); a signal or
    query to one that is not replays its history first."""
    worker_max_concurrent_workflow_tasks: int = Field(default=100, ge=2)
    worker_activity_threads: int = Field(default=16, ge=1)
    """Threads running the (blocking) activities: database writes, rendering, provider calls."""
    workflow_sandbox: Literal["trusted", "strict"] = "trusted"
    """How the worker's sandbox treats the trial workflow's own module (`workflows/trial.py`).
    `strict`: imported anew for every trial the worker starts or replays, every call it makes
    checked (a `datetime.now()` fails the workflow task). `trusted`: imported once and passed
    through, as the modules it imports are; about a tenth less worker CPU per enrolled trial
    (bench/README, "The workflow module imported once"). The test suite runs strict
    (tests/conftest.py), and replays every committed history in the SDK's own sandbox."""

    codec_keys: SecretStr = SecretStr("")
    """Payload encryption keys, `id:base64key` comma-separated; the first encrypts, all
    decrypt. Empty: payloads are not encrypted."""
    codec_keys_file: Path | None = None
    """A file holding the keys instead (same format, one per line allowed)."""
    require_encryption: bool | None = None
    """Refuse payloads that arrive unencrypted (whoever put them there had no key: a start or
    signal sent to Temporal directly). Unset: yes whenever codec keys are configured; set
    false while histories from before encryption must still be read."""
    encrypt_at_rest: bool = False
    """Encrypt the personal data columns in the database with the codec keys (names, emails,
    phone numbers, message bodies, request and webhook bodies): for a database that is not
    trusted. Rows written before stay readable; `trialpath db seal` encrypts them."""
    codec_auth_keys: Annotated[list[str], NoDecode] = []
    """Bearer keys accepted by the codec server (`trialpath codec-server`)."""
    codec_cors_origin: str = "http://127.0.0.1:8233"
    """The Temporal UI's origin, the only one whose browser may call the codec server."""

    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    worker_metrics_port: int = Field(default=0, ge=0, le=65534)
    """The worker's Prometheus endpoints: SDK metrics on this port, Trialpath's own on the
    next one. 0: none."""
    metrics_host: str = "127.0.0.1"
    metrics_public: bool = False
    """The API's `/metrics` without a bearer key (only on a network scrapers alone reach)."""

    journey_file: Path = PACKAGE_DIR / "journey.toml"
    templates_dir: Path = PROJECT_ROOT / "templates"
    seconds_per_day: float = Field(default=86400.0, gt=0)
    """Length of one journey day in real seconds; the demo uses a few seconds."""

    api_keys: Annotated[list[ApiKey], NoDecode] = []
    """The HTTP API's bearer keys, `name:role:secret` each (comma-separated, or a JSON list),
    role one of backend, support, admin, analyst; secrets of 24 characters or more."""
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies (IPs, comma-separated, or `*`) whose X-Forwarded-Proto and -For the API trusts:
    the TLS proxy in front of it (its `https` makes the dashboard's cookie Secure)."""
    api_max_body_bytes: int = 64 * 1024
    webhook_max_body_bytes: int = 4 * 1024 * 1024

    email_provider: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    sms_provider: Literal["outbox", "twilio"] = "outbox"
    in_app_provider: Literal["inbox", "outbox"] = "inbox"
    support_provider: Literal["outbox", "sendgrid", "smtp", "webhook"] = "outbox"
    support_webhook_url: SecretStr = Field(default=SecretStr(""), validate_default=True)
    """A Slack-compatible incoming webhook for support alerts (`support_provider = webhook`).
    The URL is the credential: https, or http on loopback only (a local receiver)."""
    support_webhook_secret: SecretStr = SecretStr("")
    """Signs each post (`X-Trialpath-Signature`) for receivers that verify it; empty: unsigned
    (Slack itself checks no signature)."""

    public_url: str = ""
    """Where users and providers reach the API: unsubscribe links, SMS status callbacks.
    Empty: the API's own address (`http://{api_host}:{api_port}`)."""
    signing_secret: SecretStr = SecretStr("")
    """Signs unsubscribe links; empty means a random one kept in `<data_dir>/signing-secret`."""
    widget_token_minutes: float = Field(default=15.0, gt=0, le=1440)
    """How long a user token of the in-app widget is valid (`POST .../widget-token`)."""
    widget_origins: Annotated[list[str], NoDecode] = []
    """Origins of the product's web app (`https://app.example.com`, comma-separated) whose
    pages may call the widget's routes (CORS). Empty: only pages served by the API itself."""
    booking_url: str = ""
    """The self-serve booking page for success calls: messages link to it with the user's id
    and a signed token (`?user_id=...&token=...`). Empty: the product app's `/call/book`."""
    delivery_timeout_seconds: float = Field(default=15.0, gt=0)
    reconcile_after_seconds: float = Field(default=600.0, ge=0)
    """How long a send whose outcome is unknown (a timeout, a crash) waits for the provider's
    own record (webhook event or lookup) before it is sent again."""

    sendgrid_api_key: SecretStr = SecretStr("")
    sendgrid_base_url: str = "https://api.sendgrid.com"
    """`global`, `eu`, or any URL (a local mock in tests)."""
    sendgrid_sandbox: bool = False
    idempotency_retention_hours: float = Field(default=48.0, gt=0)
    """Answers stored for `Idempotency-Key` retries are deleted after this long."""
    delivered_signal_retention_days: float = Field(default=7.0, gt=0)
    """Signals the API queued are deleted this long after delivery (or giving up)."""
    events_after_end_days: float = Field(default=90.0, ge=0)
    """Product events are accepted this many journey days after a trial's workflow ended:
    stored (never counted toward activation) for retention, upsell, referral and CLTV."""
    cltv_monthly_churn: float = Field(default=0.03, gt=0, le=1)
    """The paying customers' monthly churn assumed by the CLTV KPI (lifetime = 1 / churn),
    until it is measured; shown next to the figure."""
    erase_wait_seconds: float = Field(default=60.0, ge=0)
    """How long an erasure waits for Temporal to confirm every run of the workflow is gone
    (deletion is asynchronous there); past it the answer says how many runs are pending."""
    sendgrid_webhook_public_key: str = ""
    """The Event Webhook's ECDSA public key (base64 DER, as SendGrid shows it)."""
    sendgrid_webhook_max_age_seconds: float = Field(default=600.0, gt=0)
    """A signed Event Webhook request older (or newer) than this is refused as a replay."""

    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_messaging_service_sid: str = ""
    twilio_from_number: str = ""
    twilio_base_url: str = "https://api.twilio.com"
    sms_max_segments: int = Field(default=3, ge=1, le=10)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_security: Literal["none", "starttls", "tls"] = "none"

    product_name: str = "Acme"
    product_app_url: str = "https://app.acme.example"
    company_address: str = "Acme SAS, 10 rue de la Paix, 75002 Paris, France"
    sender_email: str = "onboarding@acme.example"
    support_email: str = "support@acme.example"

    @field_validator("codec_auth_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("widget_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = cls._split_keys(value)
        if not isinstance(value, list):
            raise ValueError("a list of origins such as https://app.example.com")
        origins = []
        for entry in value:
            origin = str(entry).strip().rstrip("/")
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path
                or parts.query
                or parts.fragment
                or parts.username
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], no path "
                    "(such as https://app.example.com)"
                )
            origins.append(origin)
        return origins

    @field_validator("api_keys", mode="before")
    @classmethod
    def _named_keys(cls, value: object) -> object:
        if isinstance(value, str):
            value = cls._split_keys(value)
        if not isinstance(value, list):
            raise ValueError("a list of name:role:secret entries")
        return parse_api_keys(value)

    @field_validator(
        "temporal_tls_cert", "temporal_tls_key", "temporal_tls_ca", "codec_keys_file", mode="before"
    )
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sendgrid_base_url")
    @classmethod
    def _sendgrid_region(cls, value: str) -> str:
        regions = {"global": "https://api.sendgrid.com", "eu": "https://api.eu.sendgrid.com"}
        return regions.get(value.strip().lower(), value.strip().rstrip("/"))

    @field_validator("public_url", "twilio_base_url", "temporal_ui_url", "booking_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @field_validator("temporal_ui_url")
    @classmethod
    def _ui_url(cls, value: str) -> str:
        # A button with a malformed link makes Slack refuse the whole alert.
        parts = urlsplit(value)
        if value and (parts.scheme not in ("https", "http") or not parts.netloc):
            raise ValueError("must be an http:// or https:// URL (the Temporal UI's address)")
        return value

    @field_validator("support_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # Declared after support_provider, so that one is already in info.data. The messages
        # never repeat the URL: it is the credential.
        url = value.get_secret_value().strip()
        if not url:
            if info.data.get("support_provider") == "webhook":
                raise ValueError(
                    "needed when TRIALPATH_SUPPORT_PROVIDER is webhook: the incoming webhook's "
                    "URL (https://hooks.slack.com/services/...)"
                )
            return SecretStr("")
        problem = webhook_url_problem(url)
        if problem:
            raise ValueError(problem)
        return SecretStr(url)

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'trialpath.db'}"


def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook's address, or None: https only, http on loopback only
    (a receiver on this machine), with a host and no user info. Never quotes the URL."""
    parts = urlsplit(url)
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return "not a URL (its host or port cannot be read)"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if parts.scheme == "http" and not _loopback(host):
        return (
            "must be https:// (http:// only for a receiver on loopback: 127.0.0.1, ::1, localhost)"
        )
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(ValueError):
    """A setting (environment, `.env`, or a file it names) is unusable; the message names it.
    The CLI, the worker and the API report it in one line and exit 2."""


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        problems = [
            f"{ENV_PREFIX}{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg']}"
            for e in err.errors()
        ]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
