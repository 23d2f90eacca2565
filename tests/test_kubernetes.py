"""The Kubernetes deployment (deploy/kubernetes/): every object valid against the Kubernetes API
schema (strict: no unknown field), and the files consistent with each other and with the code
they run (settings, commands, probes, the Temporal frontend of the Helm release)."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from trialpath.entry.api.routes import health
from trialpath.operations.config import PROJECT_ROOT, Settings

pytestmark = pytest.mark.database_agnostic

FOLDER = PROJECT_ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.31.0"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d]


def by_kind(kind: str, name: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in documents("trialpath.yaml")
        if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    return found


@pytest.mark.parametrize(
    "document",
    documents("trialpath.yaml"),
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_every_object_is_valid_kubernetes(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_validation_catches_a_broken_object() -> None:
    worker = copy.deepcopy(by_kind("Deployment", "trialpath-worker"))
    worker["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES, strict=True)
    worker = copy.deepcopy(by_kind("Deployment", "trialpath-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES, strict=True)


def containers() -> list[dict[str, Any]]:
    found = []
    for document in documents("trialpath.yaml"):
        if document["kind"] in ("Deployment", "Job"):
            found += document["spec"]["template"]["spec"]["containers"]
    return found


def test_the_configuration_is_trialpaths_settings() -> None:
    config = by_kind("ConfigMap", "trialpath")["data"]
    fields = Settings.model_fields
    for key in config:
        assert key.startswith("TRIALPATH_") and key.removeprefix("TRIALPATH_").lower() in fields
    settings = Settings.model_validate(
        {k.removeprefix("TRIALPATH_").lower(): v for k, v in config.items()}
        | {"sendgrid_api_key": "SG.x", "twilio_auth_token": "x", "twilio_account_sid": "AC1"}
    )
    assert settings.task_queue == "trialpath"
    for container in containers():
        refs = {
            next(iter(ref.values()))["name"] for ref in container["envFrom"]
        }  # the ConfigMap and the Secret, both named trialpath
        assert refs == {"trialpath"}


def test_commands_and_probes_exist() -> None:
    commands = {c["name"]: c["command"] for c in containers()}
    assert commands["worker"] == ["python", "-m", "worker"]
    assert commands["migrate"] == ["trialpath", "db", "upgrade"]
    module, _, factory = next(a for a in commands["api"] if ":" in a).partition(":")
    assert callable(getattr(importlib.import_module(module), factory))
    importlib.import_module("worker")
    routes = {route.path for route in health.routes}
    api = by_kind("Deployment", "trialpath-api")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["path"] in routes
    # One image for every process: the worker and the API must run the same code.
    assert len({c["image"] for c in containers()}) == 1


def test_the_worker_scaler_and_temporal_release_match_the_configuration() -> None:
    config = by_kind("ConfigMap", "trialpath")["data"]
    (scaler,) = documents("keda-worker.yaml")
    assert scaler["kind"] == "ScaledObject"
    assert scaler["spec"]["scaleTargetRef"]["name"] == "trialpath-worker"
    assert scaler["metadata"]["namespace"] == "trialpath"
    (trigger,) = scaler["spec"]["triggers"]
    assert trigger["type"] == "temporal"
    assert trigger["metadata"]["endpoint"] == config["TRIALPATH_TEMPORAL_ADDRESS"]
    assert trigger["metadata"]["taskQueue"] == config["TRIALPATH_TASK_QUEUE"]
    assert trigger["metadata"]["namespace"] == config["TRIALPATH_TEMPORAL_NAMESPACE"]
    worker = by_kind("Deployment", "trialpath-worker")
    assert scaler["spec"]["minReplicaCount"] == worker["spec"]["replicas"]
    # The Helm release `temporal` in namespace `temporal` serves `temporal-frontend` there.
    assert config["TRIALPATH_TEMPORAL_ADDRESS"].startswith("temporal-frontend.temporal.svc")
    (values,) = documents("temporal-values.yaml")
    for store in ("default", "visibility"):
        sql = values["server"]["config"]["persistence"][store]["sql"]
        assert sql["driver"] == "postgres12" and "password" not in sql
    assert not any(values[db]["enabled"] for db in ("cassandra", "mysql", "postgresql"))


def test_the_manifests_are_in_the_docs() -> None:
    docs = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    for path in sorted(Path(FOLDER).glob("*.yaml")):
        assert f"deploy/kubernetes/{path.name}" in docs
