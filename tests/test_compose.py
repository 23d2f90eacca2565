"""docker-compose.yml cannot run here (no Docker engine): check it is coherent instead."""

from __future__ import annotations

import re

import pytest
import yaml

from trialpath.operations.config import PROJECT_ROOT, Settings


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_services_and_dependencies_exist() -> None:
    services = compose()["services"]
    assert {"postgresql", "temporal", "temporal-ui", "worker", "api"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        assert "image" in service or "build" in service, name


@pytest.mark.parametrize("name", ["worker", "api"])
def test_trialpath_settings_are_real_settings_and_point_at_the_stack(name: str) -> None:
    services = compose()["services"]
    env = services[name]["environment"]
    known = {f"TRIALPATH_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    host = env["TRIALPATH_TEMPORAL_ADDRESS"].split(":")[0]
    assert host in services
    db = re.match(
        r"postgresql\+psycopg://(\w+):(\w+)@([\w-]+):5432/(\w+)", env["TRIALPATH_DATABASE_URL"]
    )
    assert db is not None
    user, password, db_host, name = db.groups()
    pg = services["postgresql"]["environment"]
    assert (user, password, name) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    assert db_host == "postgresql"
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_published_ports_match_the_embedded_defaults() -> None:
    services = compose()["services"]
    assert "127.0.0.1:7233:7233" in services["temporal"]["ports"]
    assert "127.0.0.1:8233:8080" in services["temporal-ui"]["ports"]
    assert "8000:8000" in services["api"]["ports"]
    assert "readyz" in " ".join(services["api"]["healthcheck"]["test"])


def test_what_has_no_authentication_is_published_on_loopback_only() -> None:
    """Temporal's gRPC and UI and the codec server check no credentials: whoever reaches them
    could start or signal trials (and have the worker send mail). Only the API, which checks
    API keys, may be published on every interface."""
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            if name != "api":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_api_and_workers_share_the_link_secret_and_public_url() -> None:
    """Unsubscribe links made by a worker are checked by the API: same secret, same address."""
    services = compose()["services"]
    for setting in ("TRIALPATH_SIGNING_SECRET", "TRIALPATH_PUBLIC_URL"):
        values = {services[name]["environment"].get(setting) for name in ("api", "worker")}
        assert len(values) == 1 and None not in values, (setting, values)
    assert "?" in services["api"]["environment"]["TRIALPATH_SIGNING_SECRET"]  # must be set


def test_images_are_pinned_and_ours_does_not_run_as_root() -> None:
    for name, service in compose()["services"].items():
        if "image" in service:
            assert re.search(r":\d+\.\d+", service["image"]), f"{name}: {service['image']}"
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_dockerfile_copies_paths_that_exist() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (PROJECT_ROOT / source).exists(), source


def test_env_example_lists_every_setting_and_only_settings() -> None:
    text = (PROJECT_ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^# (TRIALPATH_[A-Z0-9_]+)=", text, re.MULTILINE))
    known = {f"TRIALPATH_{name.upper()}" for name in Settings.model_fields}
    assert sorted(known - listed) == [], "settings missing from .env.example"
    assert sorted(set(re.findall(r"TRIALPATH_[A-Z0-9_]+", text)) - known) == []
    # Every example value is one the settings accept.
    values = dict(re.findall(r"^# (TRIALPATH_[A-Z0-9_]+)=(.*)$", text, re.MULTILINE))
    values.pop("TRIALPATH_CODEC_KEYS")  # a placeholder: the real value is a secret
    values.pop("TRIALPATH_CODEC_KEYS_FILE")
    for tls in ("CERT", "KEY", "CA"):
        values.pop(f"TRIALPATH_TEMPORAL_TLS_{tls}")  # files that exist only in a deployment
    Settings.model_validate(
        {name.removeprefix("TRIALPATH_").lower(): value for name, value in values.items()}
    )
