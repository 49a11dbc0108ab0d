import pytest

from tools.stack import SETTINGS, StackConfig, service_env


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_variable_the_runner_sets_is_a_real_setting_and_is_read_back(service, monkeypatch, tmp_path):
    settings_cls = SETTINGS[service]
    prefix = service.upper() + "_"
    env = service_env(StackConfig(workspace=tmp_path), service)
    ours = {k: v for k, v in env.items() if k.startswith(prefix)}
    for key in ours:
        field = key[len(prefix):].lower().split("__")[0]
        assert field in settings_cls.model_fields, key
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = settings_cls()
    assert settings.port == int(ours[prefix + "PORT"])
    assert settings.metrics_port == int(ours[prefix + "METRICS_PORT"])


def test_service_ports_follow_the_environment(monkeypatch):
    monkeypatch.setenv("RETRIEVAL_PORT", "6123")
    config = StackConfig()
    assert config.ports["retrieval"] == 6123
    assert service_env(config, "gateway")["GATEWAY_RETRIEVAL_ADDR"] == "localhost:6123"
