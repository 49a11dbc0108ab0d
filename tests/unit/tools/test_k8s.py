"""The Kubernetes manifests agree with the code they deploy.

Every kustomization renders and validates (strict schemas); every env var in the rendered manifests is a
field of its service's settings with a value that field accepts; ports, probes, peer addresses, Triton's
flags and models, data paths, Job commands, network policies, autoscalers and the images' requirements match
the services, the CLI and pyproject.toml. checkov and hadolint run in ``make k8s-check`` (tools/k8s_check.py).
"""

from __future__ import annotations

import copy
from pathlib import PurePosixPath

import pytest
from pydantic_settings import BaseSettings

from services.common import tracing
from services.common.server import LIVENESS_SERVICE
from services.common.settings import GRPC_RESTRICTED_HEADER_PREFIX, TritonSettings
from services.common.triton_clients import ToolTritonSettings
from services.instruction.settings import InstructionSettings
from services.ranking.settings import RankingSettings
from tests.unit.tools.k8s_rendered import (
    ARG_VARIABLE,
    MODELS,
    OVERLAYS,
    ROOT,
    SETTINGS,
    _claim,
    _cli_params,
    _container,
    _env,
    _field,
    _mount_of,
    _objects,
    _parse,
    _pod,
    _port,
    _python_c_calls,
    _service_deployments,
    _service_port,
    _setting,
    _wait_targets,
    _workloads,
)
from tools import k8s_check


@pytest.mark.parametrize("name", list(k8s_check.kustomizations()))
def test_every_kustomization_renders_and_passes_strict_schema_validation(rendered: dict, name: str) -> None:
    objects = rendered[name]
    assert objects
    assert k8s_check.schema_errors(objects) == []
    assert k8s_check.skip_annotation_errors(objects) == []


def test_schema_validation_rejects_misspelt_fields(rendered: dict) -> None:
    deployment = copy.deepcopy(_objects(rendered, "production", "Deployment")["ranking"])
    _container(deployment, "ranking")["imagePullPolicyy"] = "Always"
    monitor = copy.deepcopy(_objects(rendered, "production", "PodMonitor")["triton"])
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert len(k8s_check.schema_errors([deployment])) == len(k8s_check.KUBERNETES_VERSIONS)
    assert k8s_check.schema_errors([monitor])
    kept = copy.deepcopy(deployment)
    kept["metadata"]["annotations"]["checkov.io/skip9"] = "CKV_K8S_8"
    assert k8s_check.skip_annotation_errors([kept])


def test_overlays_pick_their_components(rendered: dict) -> None:
    for overlay in OVERLAYS:
        kinds = {o["kind"] for o in rendered[overlay]}
        assert {"Namespace", "Deployment", "Service", "ServiceAccount", "Job", "PersistentVolumeClaim"} <= kinds
        namespaced = [o for o in rendered[overlay] if o["kind"] != "Namespace"]
        assert all(o["metadata"].get("namespace") == "instructrec" for o in namespaced)
        assert set(_objects(rendered, overlay, "NetworkPolicy"))

    local = _objects(rendered, "local", "Deployment")
    assert {d["spec"]["replicas"] for d in local.values()} == {1}
    assert not _objects(rendered, "local", "HorizontalPodAutoscaler")
    assert "nvidia.com/gpu" not in str(local["triton"])

    production = _objects(rendered, "production", "Deployment")
    assert MONITORING <= set(production), "the monitoring component's trace collector"
    production = {name: d for name, d in production.items() if name not in MONITORING}
    names = set(production)
    assert names == set(SETTINGS) | {"triton"}
    triton = _pod(production["triton"])
    assert _container(production["triton"], "triton")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["nodeSelector"] and triton["tolerations"]
    hpas = _objects(rendered, "production", "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == names
    assert all(h["spec"]["minReplicas"] >= 2 for h in hpas.values())
    assert all("replicas" not in d["spec"] for d in production.values()), "the HPAs own the replica counts"
    pdbs = _objects(rendered, "production", "PodDisruptionBudget")
    assert {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for p in pdbs.values()} == names
    for name, deployment in production.items():
        anti = _pod(deployment)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    assert set(_objects(rendered, "production", "PodMonitor")) == {"instructrec-services", "triton"}


# --------------------------------------------------------------------------------------------------------
# Settings: env vars, ports, probes, addresses
# --------------------------------------------------------------------------------------------------------


MONITORING = {"otel-collector"}
"""Deployments of the monitoring component (one collector; not on the request path, no HPA or PDB)."""
OTEL_SDK_VARS = set(tracing.ENDPOINT_VARIABLES)


# Batch containers that read settings from their env: the tools image's push and retrain reach Triton with the
# tools' settings; the preference CronJob runs the instruction service's own batch module with its settings.
TOOL_SETTINGS: dict[str, type[BaseSettings]] = {
    "push-model": ToolTritonSettings,
    "retrain": ToolTritonSettings,
    "precompute-preferences": InstructionSettings,
}
# The interaction store's credentials, which libpq (psycopg) reads from the environment, not a settings field.
LIBPQ_SECRET_VARS = {"PGUSER", "PGPASSWORD", "PGDATABASE"}
# Workloads that connect to the interaction store, and the option or variable that names it (a postgresql:// URL).
STORE_CLIENTS = {"gateway", "retrain"}


def _batch_workloads(rendered: dict, overlay: str) -> dict[str, dict]:
    """Deployments and Jobs, and each CronJob as the Job it creates (its jobTemplate)."""
    cron = {name: {"kind": "Job", "metadata": c["metadata"], "spec": c["spec"]["jobTemplate"]["spec"]}
            for name, c in _objects(rendered, overlay, "CronJob").items()}
    return _workloads(rendered, overlay) | cron


def _store_target(name: str, container: dict) -> str:
    """The interaction store a container connects to: the gateway's setting, retrain's --store option."""
    if name == "gateway":
        return _env(container)["GATEWAY_INTERACTION_STORE"]
    args = container["args"]
    return args[args.index("--store") + 1]


def _arg_variables(container: dict) -> set[str]:
    """The ``$(NAME)`` references the kubelet expands in a container's command and args."""
    return {m for a in container.get("command", []) + container.get("args", []) for m in ARG_VARIABLE.findall(a)}


@pytest.mark.parametrize("overlay", OVERLAYS + list(k8s_check.tasks()))
def test_every_env_var_is_a_settings_field_with_a_valid_value(rendered: dict, overlay: str) -> None:
    for name, workload in _batch_workloads(rendered, overlay).items():
        pod = _pod(workload)
        for container in pod.get("initContainers", []) + pod["containers"]:
            env = container.get("env", [])
            settings_cls = SETTINGS.get(name) if workload["kind"] == "Deployment" else TOOL_SETTINGS.get(name)
            if settings_cls is not None and container["name"] == name:
                for var in env:
                    if var["name"] in OTEL_SDK_VARS:  # the OpenTelemetry SDK reads these itself (tracing.py)
                        assert var["value"].startswith("http://otel-collector:"), var
                        continue
                    if name in STORE_CLIENTS and var["name"] in LIBPQ_SECRET_VARS:
                        # libpq reads these itself; they come from the store's Secret, never from the manifest
                        assert var["valueFrom"]["secretKeyRef"]["name"] == "interactions-db", var["name"]
                        assert _store_target(name, container).startswith("postgresql://")
                        continue
                    annotation, _ = _field(settings_cls, var["name"])
                    if "value" in var:  # valueFrom (a Secret, a field ref): the name is all there is to check
                        _parse(annotation, var["value"])
            elif name == "triton" and container["name"] == "triton":
                # Triton reads no env of ours: each variable exists for a $(NAME) in its args.
                assert {v["name"] for v in env} == _arg_variables(container), "triton env vars its args do not use"
            else:
                assert env == [], f"{name}/{container['name']} sets env vars that no settings class reads"


def _secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    """env var name -> (Secret name, key) for every variable a container takes from a Secret."""
    return {v["name"]: (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
            for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_model_control_key_reaches_only_triton_the_push_and_the_services_that_repair_models(
    rendered: dict, overlay: str
) -> None:
    workloads = _batch_workloads(rendered, overlay) | _workloads(rendered, "task-push-model")
    triton = _container(workloads["triton"], "triton")
    flags = dict(a.split("=", 1) for a in triton["args"][1:] if a.startswith("--") and "=" in a)
    (key_var,) = _arg_variables(triton)
    secret = _secret_refs(triton)[key_var]
    # Both endpoints restrict exactly the model-repository API, with the header the clients send.
    header = TritonSettings().model_control_header
    for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
        assert flags[flag] == f"model-repository:{header}=$({key_var})", flag
    holders = set()
    for name, workload in workloads.items():
        pod = _pod(workload)
        for volume in pod.get("volumes", []):
            assert volume.get("secret", {}).get("secretName") != secret[0], f"{name} mounts the key as a file"
        for container in pod.get("initContainers", []) + pod["containers"]:
            refs = _secret_refs(container)
            if secret in refs.values():
                holders.add(name)
            if name in ("instruction", "retrieval", "ranking") and container["name"] == name:
                prefix = f"{name.upper()}_TRITON__"
                assert refs[prefix + "MODEL_CONTROL_KEY"] == secret
                assert _setting(name, _env(container), prefix + "MODEL_CONTROL_HEADER") == header
            if name in ("push-model", "retrain") and container["name"] == name:
                assert refs["INSTRUCTREC_TRITON__MODEL_CONTROL_KEY"] == secret
    assert holders == {"triton", "push-model", "retrain", "instruction", "retrieval", "ranking"}
    assert GRPC_RESTRICTED_HEADER_PREFIX + header in TritonSettings(model_control_key="k" * 32).model_control_headers()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_binds_every_interface_explicitly(rendered: dict, overlay: str) -> None:
    # The settings' default is not relied on: `instructrec run` binds loopback, a pod must bind its IP.
    for name, (_, _, env) in _service_deployments(rendered, overlay).items():
        prefix = SETTINGS[name].model_config["env_prefix"]
        assert env.get(prefix + "HOST") == "0.0.0.0", name
        assert prefix + "METRICS_HOST" not in env or env[prefix + "METRICS_HOST"] == "0.0.0.0", name


def test_env_var_check_catches_names_pydantic_would_ignore() -> None:
    with pytest.raises(AssertionError, match="no field"):
        _field(RankingSettings, "RANKING_TRITON__GRPC_ADRESS")
    with pytest.raises(AssertionError, match="prefix"):
        _field(RankingSettings, "RETRIEVAL_PORT")
    annotation, default = _field(RankingSettings, "RANKING_TRITON__GRPC_ADDR")
    assert annotation is str and default == RankingSettings().triton.grpc_addr
    with pytest.raises(ValueError):
        _parse(_field(RankingSettings, "RANKING_PORT")[0], "fifty")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_match_the_settings(rendered: dict, overlay: str) -> None:
    services = _objects(rendered, overlay, "Service")
    for name, (_, container, env) in _service_deployments(rendered, overlay).items():
        prefix = SETTINGS[name].model_config["env_prefix"]
        grpc_port = _setting(name, env, prefix + "PORT")
        metrics_port = _setting(name, env, prefix + "METRICS_PORT")
        assert metrics_port, f"{name}: metrics are off unless {prefix}METRICS_PORT is set"
        assert _port(container, "grpc") == grpc_port
        assert _port(container, "metrics") == metrics_port
        # With TLS on (components/tls) the kubelet, which speaks no TLS, probes the plaintext health-only port.
        tls_on = _setting(name, env, prefix + "TLS__ENABLED")
        probe_port = _setting(name, env, prefix + "HEALTH_PORT") if tls_on else grpc_port
        if tls_on:
            assert probe_port and _port(container, "health") == probe_port, f"{name}: TLS needs a health port"
        assert container["readinessProbe"]["grpc"] == {"port": probe_port}, "readiness = overall health ('')"
        for probe in ("livenessProbe", "startupProbe"):
            assert container[probe]["grpc"] == {"port": probe_port, "service": LIVENESS_SERVICE}
        service_port = _service_port(services[name], "grpc")
        assert service_port["port"] == grpc_port and service_port["targetPort"] == "grpc"
        assert _service_port(services[name], "metrics")["targetPort"] == "metrics"
        assert services[name]["spec"]["selector"] == {"app.kubernetes.io/name": name}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_peer_addresses_are_the_peers_services_and_ports(rendered: dict, overlay: str) -> None:
    services = _objects(rendered, overlay, "Service")
    deployments = _service_deployments(rendered, overlay)
    triton = _container(_objects(rendered, overlay, "Deployment")["triton"], "triton")
    gateway_env = deployments["gateway"][2]
    for peer in ("instruction", "retrieval", "ranking"):
        host, port = _setting("gateway", gateway_env, f"GATEWAY_{peer.upper()}_ADDR").rsplit(":", 1)
        assert host == peer and int(port) == _service_port(services[peer], "grpc")["port"]
        assert int(port) == _setting(peer, deployments[peer][2], f"{peer.upper()}_PORT")
    for name in ("instruction", "retrieval", "ranking"):
        host, port = _setting(name, deployments[name][2], f"{name.upper()}_TRITON__GRPC_ADDR").rsplit(":", 1)
        assert host == "triton" and int(port) == _service_port(services["triton"], "grpc")["port"]
        assert _service_port(services["triton"], "grpc")["targetPort"] == "grpc"
        assert _port(triton, "grpc") == int(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_flags_match_its_ports_probes_and_the_models_the_services_call(rendered: dict, overlay: str) -> None:
    deployment = _objects(rendered, overlay, "Deployment")["triton"]
    container = _container(deployment, "triton")
    args = container["args"]
    assert args[0] == "tritonserver" and "command" not in container, "NVIDIA's entrypoint must stay"
    flags = [a.split("=", 1) for a in args[1:]]
    options = dict(f for f in flags if len(f) == 2 and f[0] != "--load-model")
    loaded = {f[1] for f in flags if f[0] == "--load-model"}
    assert options["--model-control-mode"] == "explicit"
    for flag, port in (("--http-port", "http"), ("--grpc-port", "grpc"), ("--metrics-port", "metrics")):
        assert int(options[flag]) == _port(container, port)
    deployments = _service_deployments(rendered, overlay)
    served = {_setting(n, env, f"{n.upper()}_MODEL_NAME") for n, (_, _, env) in deployments.items() if n != "gateway"}
    served.add(_setting("retrieval", deployments["retrieval"][2], "RETRIEVAL_SEQUENCE_MODEL_NAME"))
    served.add(_setting("instruction", deployments["instruction"][2], "INSTRUCTION_READER_MODEL_NAME"))
    assert loaded == served == MODELS
    assert {p.parent.name for p in (ROOT / "model_repository").glob("*/config.pbtxt")} == MODELS
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    repository, volume = _mount_of(deployment, container, options["--model-repository"])
    assert _claim(volume) == "model-repository"
    from tools.runtime.assets import READY_MARKER

    assert {f"{options['--model-repository']}/{m}/*/metadata.json" for m in MODELS} | {
        f"{options['--model-repository']}/{READY_MARKER}"} == set(_wait_targets(deployment))
    (shm,) = [v for v in _pod(deployment)["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(m["mountPath"] == "/dev/shm" and m["name"] == "dshm" for m in container["volumeMounts"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_graceful_shutdown_fits_the_termination_grace_period(rendered: dict, overlay: str) -> None:
    for name, (deployment, container, env) in _service_deployments(rendered, overlay).items():
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = _setting(name, env, f"{name.upper()}_SHUTDOWN_GRACE_S")
        assert _pod(deployment)["terminationGracePeriodSeconds"] > pre_stop + grace, name


# --------------------------------------------------------------------------------------------------------
# Data, models and the Jobs that write them
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_data_paths_are_on_the_volumes_the_jobs_write(rendered: dict, overlay: str) -> None:
    jobs = _objects(rendered, overlay, "Job")
    claims = set(_objects(rendered, overlay, "PersistentVolumeClaim"))

    prepare = _python_c_calls(_container(jobs["prepare-data"], "prepare-data"))["prepare_movielens"]
    data_dir = str(prepare.arguments["out_dir"])
    export_calls = _python_c_calls(_container(jobs["model-export"], "model-export"))
    export = export_calls["ensure_default_repository"]
    # the committed instruction-tuned adapters are exported into the same repository, after the base models
    assert export_calls["ensure_tuned_versions"].arguments["repository"] == export.arguments["repository"]
    assert export_calls["mark_repository_ready"].arguments["repository"] == export.arguments["repository"]
    triton = _container(_objects(rendered, overlay, "Deployment")["triton"], "triton")
    assert str(export.arguments["repository"]) == dict(a.split("=", 1) for a in triton["args"][1:] if "=" in a)[
        "--model-repository"]
    command, options = _cli_params(_container(jobs["build-index"], "build-index")["args"])
    assert str(options["data_dir"]) == data_dir
    index_dir = str(options["out_dir"])
    host, port = options["triton"].rsplit(":", 1)
    assert host == "triton" and int(port) == _port(triton, "grpc")

    written: dict[str, tuple[str, str]] = {}  # path -> (claim, mountPath) as the Job that writes it sees it
    for job, path in (("prepare-data", data_dir), ("build-index", index_dir), ("model-export",
                                                                              str(export.arguments["repository"]))):
        mount_path, volume = _mount_of(jobs[job], _container(jobs[job], job), path)
        assert _claim(volume) in claims
        written[path] = (_claim(volume), mount_path)

    expected = {
        "gateway": {
            "GATEWAY_CATALOG_PATH": f"{data_dir}/items.jsonl",
            "GATEWAY_INTERACTIONS_PATH": f"{data_dir}/train.csv",
        },
        "instruction": {"INSTRUCTION_CATALOG_PATH": f"{data_dir}/items.jsonl"},
        "retrieval": {"RETRIEVAL_CATALOG_PATH": f"{data_dir}/items.jsonl", "RETRIEVAL_INDEX_DIR": index_dir},
    }
    for name, (deployment, container, env) in _service_deployments(rendered, overlay).items():
        for env_name, path in expected.get(name, {}).items():
            assert str(_setting(name, env, env_name)) == path
            mount_path, volume = _mount_of(deployment, container, path)
            source = next(p for p in written if PurePosixPath(path).is_relative_to(PurePosixPath(p)))
            assert (_claim(volume), mount_path) == written[source], f"{name} reads {path} from another volume"
            assert any(m["mountPath"] == mount_path and m.get("readOnly") for m in container["volumeMounts"])
        # The init container waits for exactly the files this service reads.
        reads = {str(_setting(name, env, e)) for e in expected.get(name, {})}
        index_files = ("items.faiss", "items.json")
        waits = {str(PurePosixPath(t).parent) if t.endswith(index_files) else t for t in _wait_targets(deployment)}
        assert waits == reads


