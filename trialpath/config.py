"""Settings, read from `TRIALPATH_*` environment variables and `.env`."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIALPATH_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".data")
    database_url: str = ""
    """Any SQLAlchemy URL; empty means SQLite at `<data_dir>/trialpath.db`."""

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "trialpath"
    temporal_ui_port: int = 8233

    journey_file: Path = PACKAGE_DIR / "journey.toml"
    templates_dir: Path = PROJECT_ROOT / "templates"
    seconds_per_day: float = Field(default=86400.0, gt=0)
    """Length of one journey day in real seconds; the demo uses a few seconds."""

    api_keys: Annotated[list[str], NoDecode] = []
    """Bearer keys accepted by the HTTP API (JSON list or comma-separated in the environment)."""
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_body_bytes: int = 64 * 1024

    email_provider: str = "outbox"
    sms_provider: str = "outbox"
    in_app_provider: str = "outbox"
    support_provider: str = "outbox"

    product_name: str = "Acme"
    product_app_url: str = "https://app.acme.example"
    company_address: str = "Acme SAS, 10 rue de la Paix, 75002 Paris, France"
    sender_email: str = "onboarding@acme.example"
    support_email: str = "support@acme.example"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'trialpath.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
