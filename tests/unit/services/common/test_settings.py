"""``ServiceSettings`` and its nested groups: defaults, validation at construction, and env parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from services.common.settings import ClientTlsSettings, ServerTlsSettings, ServiceSettings, TritonSettings


class ProbeSettings(ServiceSettings):
    """A service's settings as the services declare them: own prefix, nested groups."""

    model_config = SettingsConfigDict(env_prefix="PROBE_")

    triton: TritonSettings = TritonSettings()
    client_tls: ClientTlsSettings = ClientTlsSettings()


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    for name, path in files.items():
        path.write_bytes(f"-- {name} --".encode())
    return files


def test_defaults() -> None:
    s = ProbeSettings()
    assert (s.host, s.port, s.metrics_port, s.health_port) == ("0.0.0.0", 0, None, None)
    assert (s.log_level, s.log_format, s.max_concurrent_rpcs) == ("INFO", "json", 256)
    assert (s.triton.grpc_addr, s.triton.timeout_s, s.triton.repair_crashed_stub) == ("localhost:8001", 30.0, True)
    assert not s.tls.enabled and not s.triton.tls.enabled and not s.client_tls.enabled
    assert s.accepted_tokens() == frozenset()


def test_env_vars_use_the_prefix_and_double_underscores_for_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PROBE_PORT": "50099",
        "PROBE_LOG_LEVEL": "DEBUG",
        "PROBE_SHUTDOWN_GRACE_S": "0",
        "PROBE_TRITON__GRPC_ADDR": "triton:8001",
        "PROBE_TRITON__TIMEOUT_S": "2.5",
        "PROBE_TRITON__REPAIR_CRASHED_STUB": "false",
        "PROBE_TRITON__TLS__SERVER_NAME": "triton.internal",
        "PROBE_AUTH_TOKENS": '["s3cret", "other"]',
        "PROBE_NOT_A_FIELD": "ignored",  # extra="ignore": unknown names do not fail the start
        "PORT": "1",  # another service's (unprefixed) variable
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = ProbeSettings()
    assert (s.port, s.log_level, s.shutdown_grace_s) == (50099, "DEBUG", 0.0)
    assert (s.triton.grpc_addr, s.triton.timeout_s, s.triton.repair_crashed_stub) == ("triton:8001", 2.5, False)
    assert s.triton.tls.server_name == "triton.internal" and not s.triton.tls.enabled
    assert s.accepted_tokens() == frozenset({"s3cret", "other"})
    assert "s3cret" not in repr(s)


def test_values_passed_in_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_PORT", "1234")
    monkeypatch.setenv("PROBE_TRITON__GRPC_ADDR", "from-env:8001")
    s = ProbeSettings(port=0, triton=TritonSettings(grpc_addr="passed:8001"))
    assert (s.port, s.triton.grpc_addr) == (0, "passed:8001")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PROBE_PORT", "70000", "port"),
        ("PROBE_PORT", "eighty", "port"),
        ("PROBE_LOG_LEVEL", "TRACE", "log_level"),
        ("PROBE_TRITON__TIMEOUT_S", "0", "timeout_s"),
        ("PROBE_AUTH_TOKENS", "not json", "auth_tokens"),
    ],
)
def test_a_bad_env_value_fails_at_construction(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                               message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, ValueError), match=message):
        ProbeSettings()


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": -1},
        {"port": 65536},
        {"metrics_port": 65536},
        {"health_port": -1},
        {"log_format": "xml"},
        {"shutdown_grace_s": -0.1},
        {"max_concurrent_rpcs": 0},
        {"max_connection_age_s": -1},
        {"health_poll_interval_s": 0},
        {"max_id_chars": 0},
    ],
)
def test_service_settings_reject_out_of_range_values(overrides: dict) -> None:
    with pytest.raises(ValidationError, match=next(iter(overrides))):
        ServiceSettings(**overrides)


@pytest.mark.parametrize("overrides", [{"timeout_s": 0}, {"repair_interval_s": -1}, {"max_reconnect_backoff_s": 0}])
def test_triton_settings_reject_non_positive_times(overrides: dict) -> None:
    with pytest.raises(ValidationError, match=next(iter(overrides))):
        TritonSettings(**overrides)


def test_server_tls_needs_existing_cert_and_key_when_enabled(pem_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs tls.cert_path and tls.key_path"):
        ServerTlsSettings(enabled=True, cert_path=pem_files["cert"])
    with pytest.raises(ValidationError, match="does not exist"):
        ServerTlsSettings(enabled=True, cert_path=pem_files["cert"], key_path=tmp_path / "missing.pem")
    # Paths are only checked when TLS is on (a manifest may mount them only where it enables TLS).
    assert not ServerTlsSettings(cert_path=tmp_path / "missing.pem").enabled
    tls = ServerTlsSettings(enabled=True, cert_path=pem_files["cert"], key_path=pem_files["key"])
    assert tls.key_pair() == (b"-- key --", b"-- cert --") and tls.client_ca() is None
    mutual = ServerTlsSettings(enabled=True, cert_path=pem_files["cert"], key_path=pem_files["key"],
                               client_ca_path=pem_files["ca"])
    assert mutual.client_ca() == b"-- ca --"


def test_server_tls_from_nested_env_vars(monkeypatch: pytest.MonkeyPatch, pem_files: dict[str, Path]) -> None:
    monkeypatch.setenv("PROBE_TLS__ENABLED", "true")
    monkeypatch.setenv("PROBE_TLS__CERT_PATH", str(pem_files["cert"]))
    with pytest.raises(ValidationError, match="needs tls.cert_path and tls.key_path"):
        ProbeSettings()
    monkeypatch.setenv("PROBE_TLS__KEY_PATH", str(pem_files["key"]))
    s = ProbeSettings()
    assert s.tls.enabled and s.tls.key_pair() == (b"-- key --", b"-- cert --")


def test_client_tls_needs_cert_and_key_together_and_existing_files(pem_files: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="both cert_path and key_path"):
        ClientTlsSettings(cert_path=pem_files["cert"])
    with pytest.raises(ValidationError, match="both cert_path and key_path"):
        ClientTlsSettings(key_path=pem_files["key"])
    with pytest.raises(ValidationError, match="does not exist"):
        ClientTlsSettings(enabled=True, ca_path=tmp_path / "missing.pem")
    tls = ClientTlsSettings(enabled=True, ca_path=pem_files["ca"], cert_path=pem_files["cert"],
                            key_path=pem_files["key"])
    assert tls.files() == (b"-- ca --", b"-- key --", b"-- cert --")
    assert ClientTlsSettings(enabled=True).files() == (None, None, None)  # system roots, no client cert


def test_accepted_tokens_merge_the_list_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        ServiceSettings(auth_tokens_file=tmp_path / "missing")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# rotated 2024\nfrom-file\n\n   padded  \n  # indented comment\n", encoding="utf-8")
    s = ServiceSettings(auth_tokens=["listed", ""], auth_tokens_file=tokens_file)
    assert s.accepted_tokens() == frozenset({"listed", "from-file", "padded"})
