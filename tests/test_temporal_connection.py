"""How `connect()` reaches Temporal: mTLS files, Temporal Cloud API keys and the encrypting data
converter all reach `Client.connect`, checked without a real server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.service import TLSConfig

from trialpath.operations import temporal
from trialpath.operations.codec import CodecKeyError, EncryptionCodec
from trialpath.operations.config import Settings

KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def fake_connect(target_host: str, **options: Any) -> str:
        seen.append({"target_host": target_host, **options})
        return "client"

    monkeypatch.setattr(temporal.Client, "connect", fake_connect)
    return seen


async def test_plain_connection_changes_nothing(calls: list[dict[str, Any]]) -> None:
    await temporal.connect(Settings(temporal_address="temporal:7233", temporal_namespace="ns"))
    [call] = calls
    assert call["target_host"] == "temporal:7233" and call["namespace"] == "ns"
    assert call["data_converter"] is temporal.DATA_CONVERTER
    assert "tls" not in call and "api_key" not in call and call["runtime"] is None


async def test_mtls_files_reach_the_client(calls: list[dict[str, Any]], tmp_path: Path) -> None:
    for name in ("client.pem", "client.key", "ca.pem"):
        (tmp_path / name).write_bytes(f"-----{name}-----".encode())
    await temporal.connect(
        Settings(
            temporal_tls_cert=tmp_path / "client.pem",
            temporal_tls_key=tmp_path / "client.key",
            temporal_tls_ca=tmp_path / "ca.pem",
            temporal_tls_server_name="temporal.internal",
        )
    )
    tls = calls[0]["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == b"-----client.pem-----"
    assert tls.client_private_key == b"-----client.key-----"
    assert tls.server_root_ca_cert == b"-----ca.pem-----"
    assert tls.domain == "temporal.internal"


async def test_cloud_api_key_goes_over_tls(calls: list[dict[str, Any]]) -> None:
    await temporal.connect(
        Settings(
            temporal_address="ns.acct.tmprl.cloud:7233",
            temporal_api_key=SecretStr("cloud-key"),
        )
    )
    assert calls[0]["api_key"] == "cloud-key" and calls[0]["tls"] is True


async def test_encryption_keys_reach_the_client(calls: list[dict[str, Any]]) -> None:
    await temporal.connect(Settings(codec_keys=SecretStr(f"k1:{KEY}")))
    assert isinstance(calls[0]["data_converter"].payload_codec, EncryptionCodec)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"temporal_tls_cert": Path("/nonexistent/client.pem")}, "set both"),
        (
            {
                "temporal_tls_cert": Path("/nonexistent/c.pem"),
                "temporal_tls_key": Path("/nonexistent/c.key"),
            },
            "TRIALPATH_TEMPORAL_TLS_CERT: cannot read /nonexistent/c.pem",
        ),
        ({"codec_keys": SecretStr("k1:short")}, "TRIALPATH_CODEC_KEYS: key 'k1'"),
    ],
)
async def test_unusable_settings_fail_before_connecting(
    calls: list[dict[str, Any]], changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError) as info:  # noqa: PT011 (the message is checked below)
        await temporal.connect(Settings(**changes))
    assert problem in str(info.value)
    assert calls == []


def test_empty_paths_in_the_environment_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIALPATH_TEMPORAL_TLS_CERT", "")
    monkeypatch.setenv("TRIALPATH_CODEC_KEYS_FILE", " ")
    settings = Settings()
    assert settings.temporal_tls_cert is None and settings.codec_keys_file is None


def test_codec_key_errors_are_value_errors() -> None:
    # The CLI turns ValueError from connect() into a one-line message.
    assert issubclass(CodecKeyError, ValueError)


def test_every_data_converter_shares_one_payload_converter() -> None:
    """The worker builds a data converter per workflow activation; each gets the payload
    converter made once (its type adapters cached once), encrypting or not."""
    from datetime import date

    from temporalio.converter import DataConverter

    from activities.message_io import SendResult, TrialFacts

    plain = temporal.DATA_CONVERTER
    encrypting = temporal.data_converter(Settings(codec_keys=SecretStr(f"k1:{KEY}")))
    again = DataConverter(payload_converter_class=plain.payload_converter_class)
    inner = {
        id(c.payload_converter._inner_payload_converter)  # type: ignore[attr-defined]
        for c in (plain, encrypting, again)
    }
    assert len(inner) == 1
    values = [
        [SendResult(key="k", channel="email", template="t", content_hash="h", status="sent")],
        TrialFacts(
            day=1, days_left=13, ends_on=date(2026, 12, 20), activated=True, activation_progress=3
        ),
    ]
    payloads = again.payload_converter.to_payloads(values)
    decoded = plain.payload_converter.from_payloads(payloads, [list[SendResult], TrialFacts])
    assert decoded == values
