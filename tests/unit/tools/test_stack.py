from pathlib import Path

import pytest

from tools.runtime.config import SETTINGS, StackConfig
from tools.runtime.stack import service_env
from tools.train.fusion import read_fusion, stale_fusion

KEY = "k" * 43


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_variable_the_runner_sets_is_a_real_setting_and_is_read_back(service, monkeypatch, tmp_path):
    settings_cls = SETTINGS[service]
    prefix = service.upper() + "_"
    for name in ("HOST", "METRICS_HOST"):
        monkeypatch.delenv(prefix + name, raising=False)
    env = service_env(StackConfig(workspace=tmp_path), service, model_control_key=KEY)
    ours = {k: v for k, v in env.items() if k.startswith(prefix)}
    for key in ours:
        field = key[len(prefix):].lower().split("__")[0]
        assert field in settings_cls.model_fields, key
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = settings_cls()
    assert settings.port == int(ours[prefix + "PORT"])
    assert settings.metrics_port == int(ours[prefix + "METRICS_PORT"])
    # Local posture: loopback only, gRPC and metrics, unless the environment opens them.
    assert settings.host == "127.0.0.1" and settings.metrics_host == "127.0.0.1"
    if service == "gateway":  # it calls no model-repository API: it never gets the key
        assert not any("MODEL_CONTROL" in k for k in env if k.startswith(prefix))
    else:
        assert settings.triton.model_control_key.get_secret_value() == KEY
        assert settings.triton.grpc_addr.startswith("127.0.0.1:")


def test_the_environment_can_open_the_bind_addresses(monkeypatch):
    monkeypatch.setenv("GATEWAY_HOST", "0.0.0.0")
    env = service_env(StackConfig(), "gateway")
    assert env["GATEWAY_HOST"] == "0.0.0.0" and env["GATEWAY_METRICS_HOST"] == "127.0.0.1"


def test_metrics_bind_where_grpc_binds_unless_set():
    from services.ranking.settings import RankingSettings

    assert RankingSettings(host="10.1.2.3").metrics_host == "10.1.2.3"
    assert RankingSettings(host="0.0.0.0", metrics_host="127.0.0.1").metrics_host == "127.0.0.1"


def test_the_runner_probes_health_in_plaintext_where_the_service_allows_it():
    from tools.runtime.stack import health_addr

    assert health_addr("ranking", {"RANKING_PORT": "7001"}) == "127.0.0.1:7001"
    assert health_addr("ranking", {"RANKING_PORT": "7001", "RANKING_HOST": "10.0.0.5"}) == "10.0.0.5:7001"
    tls = {"RANKING_PORT": "7001", "RANKING_TLS__ENABLED": "true"}
    assert health_addr("ranking", tls) is None  # TLS only: the open port is all a plaintext probe can see
    assert health_addr("ranking", {**tls, "RANKING_HEALTH_PORT": "7002"}) == "127.0.0.1:7002"


def test_service_ports_follow_the_environment(monkeypatch):
    monkeypatch.setenv("RETRIEVAL_PORT", "6123")
    config = StackConfig()
    assert config.ports["retrieval"] == 6123
    assert service_env(config, "gateway")["GATEWAY_RETRIEVAL_ADDR"] == "127.0.0.1:6123"


def test_the_model_control_key_is_generated_unless_the_environment_gives_one(monkeypatch):
    from tools.runtime.stack import model_control_key

    monkeypatch.delenv("INSTRUCTREC_TRITON__MODEL_CONTROL_KEY", raising=False)
    (first, header), (second, _) = model_control_key(), model_control_key()
    assert first != second and len(first) >= 32 and header == "instructrec-model-control-key"
    monkeypatch.setenv("INSTRUCTREC_TRITON__MODEL_CONTROL_KEY", KEY)
    assert model_control_key()[0] == KEY


def test_triton_is_started_with_the_model_repository_api_restricted_to_the_key():
    from tools.runtime.triton_server import TritonServer

    args = TritonServer(Path("/models"), model_control_key=KEY).command()
    assert f"--grpc-restricted-protocol=model-repository:instructrec-model-control-key={KEY}" in args
    assert f"--http-restricted-api=model-repository:instructrec-model-control-key={KEY}" in args
    assert not any("restricted" in a for a in TritonServer(Path("/models")).command())


def test_the_key_travels_with_the_prefix_tritons_grpc_endpoint_expects():
    from services.common.settings import TritonSettings

    assert TritonSettings().model_control_headers() == {}
    assert TritonSettings(model_control_key=KEY).model_control_headers() == {
        "triton-grpc-protocol-instructrec-model-control-key": KEY}
    with pytest.raises(ValueError, match="URL-safe"):
        TritonSettings(model_control_key="short")
    with pytest.raises(ValueError):
        TritonSettings(model_control_header="Has Spaces")


@pytest.mark.parametrize("models", ["tuned", "base"])
def test_the_ranking_service_gets_the_fusion_weight_fitted_for_the_served_models(models, monkeypatch):
    monkeypatch.delenv("RANKING_LM_WEIGHT", raising=False)
    env = service_env(StackConfig(models=models), "ranking")
    assert float(env["RANKING_LM_WEIGHT"]) == read_fusion(models)
    monkeypatch.setenv("RANKING_LM_WEIGHT", "0.125")  # an explicit setting wins
    assert service_env(StackConfig(models=models), "ranking")["RANKING_LM_WEIGHT"] == "0.125"


def test_the_ranking_default_is_the_weight_fitted_for_the_tuned_models():
    from services.ranking.settings import RankingSettings

    assert RankingSettings.model_fields["lm_weight"].default == read_fusion("tuned")


def _fake_version(repository, name, version, adapter=None):
    import json

    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"version": version, "adapter": adapter}))


def test_served_versions_are_the_latest_or_the_latest_base_export(tmp_path):
    from tools.runtime.assets import BASE, TUNED, served_versions

    for name in ("text_encoder", "ranker", "preference_generator"):
        _fake_version(tmp_path, name, 1)
        _fake_version(tmp_path, name, 2, adapter={"type": "lora", "merged": True})
    _fake_version(tmp_path, "sequence_encoder", 1)  # trained here: no base/tuned pair
    _fake_version(tmp_path, "request_reader", 1, adapter={"type": "lora", "merged": True})  # trained here too
    (tmp_path / "ranker" / "3").mkdir()  # unfinished export: no metadata.json
    assert served_versions(tmp_path, TUNED) == {"text_encoder": 2, "ranker": 2, "preference_generator": 2,
                                                "sequence_encoder": 1, "request_reader": 1}
    assert served_versions(tmp_path, BASE) == {"text_encoder": 1, "ranker": 1, "preference_generator": 1,
                                               "sequence_encoder": 1, "request_reader": 1}


def test_served_versions_name_what_is_missing(tmp_path):
    import pytest

    from tools.runtime.assets import BASE, served_versions

    for name in ("text_encoder", "ranker", "preference_generator"):
        _fake_version(tmp_path, name, 2, adapter={"type": "lora"})
    with pytest.raises(FileNotFoundError, match="no base-model version"):
        served_versions(tmp_path, BASE)
    with pytest.raises(FileNotFoundError, match="run `instructrec prepare`"):
        served_versions(tmp_path / "empty")


def test_the_committed_tuned_fusion_weight_was_fitted_on_the_committed_adapters():
    # Retraining an adapter without `instructrec fit-fusion --models tuned --write` fails here.
    assert stale_fusion("tuned") == []


def test_a_fusion_fit_on_other_weights_is_reported(tmp_path):
    import json

    from tools.train.fusion import FUSION_FILE

    entry = json.loads(FUSION_FILE.read_text())["tuned"]
    entry["ranker_sha256"] = "0" * 64
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps({"tuned": entry}))
    assert stale_fusion("tuned", path) == ["ranker (tools/train/adapters/ranker)"]


def test_committed_training_records_hold_no_machine_paths():
    from services.common.settings import ROOT
    from tools.core.machine import repo_path

    adapters = ROOT / "tools" / "train" / "adapters"
    for record in [*adapters.glob("*/record.json"), adapters / "fusion.json"]:
        assert str(ROOT) not in record.read_text(), record
    assert repo_path(ROOT / "var" / "data") == "var/data" and repo_path(Path("/elsewhere/x")) == "/elsewhere/x"


def test_an_index_is_rebuilt_when_its_intent_heads_were_fitted_on_other_examples(tmp_path):
    import numpy as np

    from services.core.index import write_item_index
    from services.core.intent import NONE, AttributeHead, IntentModel
    from tools.runtime.assets import index_is_current

    write_item_index(tmp_path, ["1", "2"], np.eye(2, dtype=np.float32), model_version="3", popularity=[1, 1])
    assert index_is_current(tmp_path, "3") and not index_is_current(tmp_path, "4")
    assert not index_is_current(tmp_path, "3", intent_digest="abc")  # no heads beside it
    head = AttributeHead("genres", ("Comedy", NONE), np.zeros((2, 2)), np.zeros(2))
    IntentModel([head], encoder_version="3", examples_digest="abc").save(tmp_path)
    assert index_is_current(tmp_path, "3", intent_digest="abc")
    assert not index_is_current(tmp_path, "3", intent_digest="new bank")
