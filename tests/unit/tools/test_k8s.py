"""The Kubernetes manifests agree with the code they deploy.

Every kustomization renders and validates (strict schemas); every env var in the rendered manifests is a
field of its service's settings with a value that field accepts; ports, probes, peer addresses, Triton's
flags and models, data paths, Job commands, network policies, autoscalers and the images' requirements match
the services, the CLI and pyproject.toml. checkov and hadolint run in ``make k8s-check`` (tools/k8s_check.py).
"""

from __future__ import annotations

import ast
import copy
import functools
import http.server
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import runpy
import sys
import threading
import tomllib
import types
import typing
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, TypeAdapter
from pydantic_settings import BaseSettings

from services.common.server import LIVENESS_SERVICE
from services.common.settings import GRPC_RESTRICTED_HEADER_PREFIX, TritonSettings
from services.common.triton_clients import ToolTritonSettings
from services.gateway.settings import GatewaySettings
from services.instruction.settings import InstructionSettings
from services.ranking.settings import RankingSettings
from services.retrieval.settings import RetrievalSettings
from tools import k8s_check

ROOT = Path(__file__).resolve().parents[3]
SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "instruction": InstructionSettings,
    "retrieval": RetrievalSettings,
    "ranking": RankingSettings,
}
MODELS = {"text_encoder", "ranker", "preference_generator", "sequence_encoder", "request_reader"}
OVERLAYS = list(k8s_check.overlays())
WAIT_SCRIPT = "/opt/instructrec/wait_for.py"
PUSH_SCRIPT = "/opt/instructrec/push_replicas.py"
ARG_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: k8s_check.load_objects(k8s_check.render(path)) for name, path in k8s_check.kustomizations().items()}


def _objects(rendered: dict, overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered[overlay] if o["kind"] == kind}


def _workloads(rendered: dict, overlay: str) -> dict[str, dict[str, Any]]:
    return {**_objects(rendered, overlay, "Deployment"), **_objects(rendered, overlay, "Job")}


def _pod(workload: dict) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _container(workload: dict, name: str) -> dict[str, Any]:
    (container,) = [c for c in _pod(workload)["containers"] if c["name"] == name]
    return container


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _port(container: dict, name: str) -> int:
    (port,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == name]
    return port


def _service_port(service: dict, name: str) -> dict[str, Any]:
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == name]
    return port


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _field(settings_cls: type[BaseSettings], env_name: str) -> tuple[Any, Any]:
    """The (annotation, default) of the settings field an env var sets, the way pydantic-settings maps it.

    Raises:
        AssertionError: The name lacks the prefix or names no field (pydantic-settings would ignore it).
    """
    prefix = settings_cls.model_config["env_prefix"]
    delimiter = settings_cls.model_config["env_nested_delimiter"]
    assert env_name.startswith(prefix), f"{env_name} lacks the {prefix} prefix of {settings_cls.__name__}"
    model: Any = settings_cls
    default: Any = None
    annotation: Any = None
    for i, part in enumerate(env_name[len(prefix):].lower().split(delimiter)):
        assert isinstance(model, type) and issubclass(model, BaseModel), f"{env_name}: {part} is not nested"
        assert part in model.model_fields, f"{env_name}: {model.__name__} has no field {part!r}"
        field = model.model_fields[part]
        annotation = field.annotation
        default = field.default if i == 0 else getattr(default, part)
        model = _unwrap(annotation)
    return annotation, default


def _parse(annotation: Any, raw: str) -> Any:
    """A raw env value as pydantic-settings parses it: JSON for complex fields, plain text otherwise."""
    inner = _unwrap(annotation)
    origin = typing.get_origin(inner)
    complex_type = origin in (list, dict, set, tuple) or (isinstance(inner, type) and issubclass(inner, BaseModel))
    adapter = TypeAdapter(annotation)
    return adapter.validate_json(raw) if complex_type else adapter.validate_python(raw)


def _setting(service: str, env: dict[str, str], env_name: str) -> Any:
    """The value a service would run with: the env var's, else the field's default."""
    annotation, default = _field(SETTINGS[service], env_name)
    return _parse(annotation, env[env_name]) if env_name in env else default


def _service_deployments(rendered: dict, overlay: str) -> dict[str, tuple[dict, dict, dict[str, str]]]:
    deployments = _objects(rendered, overlay, "Deployment")
    result = {}
    for service in SETTINGS:
        container = _container(deployments[service], service)
        result[service] = (deployments[service], container, _env(container))
    return result


def _wait_targets(workload: dict) -> list[str]:
    targets = []
    for init in _pod(workload).get("initContainers", []):
        command = init.get("command", [])
        assert len(command) > 2 and command[1] == WAIT_SCRIPT, f"init container {init['name']} is not a wait step"
        targets += command[2:]
    return targets


def _mount_of(workload: dict, container: dict, path: str) -> tuple[str, dict[str, Any]]:
    """The (mountPath, volume) under which a path lies in a container."""
    matches = [m for m in container.get("volumeMounts", [])
               if PurePosixPath(path).is_relative_to(PurePosixPath(m["mountPath"]))]
    assert matches, f"{path} lies on no volume of {container['name']}: the root filesystem is read-only and empty"
    mount = max(matches, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in _pod(workload)["volumes"] if v["name"] == mount["name"]]
    return mount["mountPath"], volume


def _claim(volume: dict) -> str | None:
    return volume.get("persistentVolumeClaim", {}).get("claimName")


def _python_c_calls(container: dict) -> dict[str, inspect.BoundArguments]:
    """The calls of a Job's ``python -c`` script, bound to the real functions (imports checked)."""
    assert container["command"] == ["python", "-c"], container["command"]
    tree = ast.parse(container["args"][0])
    functions: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                functions[alias.asname or alias.name] = getattr(module, alias.name)

    def literal(node: ast.expr) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Path":
            return Path(ast.literal_eval(node.args[0]))
        return ast.literal_eval(node)

    calls = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            function = functions[node.func.id]
            if function is Path:
                continue
            args = [literal(a) for a in node.args]
            kwargs = {k.arg: literal(k.value) for k in node.keywords}
            calls[node.func.id] = inspect.signature(function).bind(*args, **kwargs)
    return calls


def _cli_params(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse an ``instructrec`` command line with the real CLI; (command name, parsed options)."""
    import typer.main

    from tools.cli import app

    group = typer.main.get_command(app)
    command = group.get_command(None, args[0])  # type: ignore[arg-type]
    assert command is not None, f"instructrec has no command {args[0]!r}"
    context = command.make_context(args[0], list(args[1:]))
    return args[0], context.params


# --------------------------------------------------------------------------------------------------------
# Rendering and schemas
# --------------------------------------------------------------------------------------------------------


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


# Containers of the tools image that read settings from their env (the push reaches Triton with the tools' settings).
TOOL_SETTINGS: dict[str, type[BaseSettings]] = {"push-model": ToolTritonSettings}


def _arg_variables(container: dict) -> set[str]:
    """The ``$(NAME)`` references the kubelet expands in a container's command and args."""
    return {m for a in container.get("command", []) + container.get("args", []) for m in ARG_VARIABLE.findall(a)}


@pytest.mark.parametrize("overlay", OVERLAYS + list(k8s_check.tasks()))
def test_every_env_var_is_a_settings_field_with_a_valid_value(rendered: dict, overlay: str) -> None:
    for name, workload in _workloads(rendered, overlay).items():
        pod = _pod(workload)
        for container in pod.get("initContainers", []) + pod["containers"]:
            env = container.get("env", [])
            settings_cls = SETTINGS.get(name) if workload["kind"] == "Deployment" else TOOL_SETTINGS.get(name)
            if settings_cls is not None and container["name"] == name:
                for var in env:
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
    workloads = _workloads(rendered, overlay) | _workloads(rendered, "task-push-model")
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
            if name == "push-model" and container["name"] == name:
                assert refs["INSTRUCTREC_TRITON__MODEL_CONTROL_KEY"] == secret
    assert holders == {"triton", "push-model", "instruction", "retrieval", "ranking"}
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


def test_build_index_waits_for_its_inputs_and_for_triton(rendered: dict) -> None:
    job = _objects(rendered, "production", "Job")["build-index"]
    _, options = _cli_params(_container(job, "build-index")["args"])
    triton = _container(_objects(rendered, "production", "Deployment")["triton"], "triton")
    waits = _wait_targets(job)
    assert f"{options['data_dir']}/items.jsonl" in waits and f"{options['data_dir']}/train.csv" in waits
    assert f"http://triton:{_port(triton, 'http')}/v2/models/text_encoder/ready" in waits


def test_services_containers_run_the_service_modules(rendered: dict) -> None:
    dockerfile = (ROOT / "docker" / "services.Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    for name, (_, container, _) in _service_deployments(rendered, "production").items():
        assert container["args"] == [f"services.{name}"] and "command" not in container
        assert importlib.util.find_spec(f"services.{name}.__main__") is not None
    images = {c["image"].split("/")[-1].split(":")[0] for w in _workloads(rendered, "production").values()
              for c in _pod(w)["containers"] + _pod(w).get("initContainers", [])}
    assert images == {"instructrec-services", "instructrec-tools", "instructrec-triton"}


def test_push_task_exports_once_and_pushes_to_every_triton_replica(rendered: dict) -> None:
    (job,) = _objects(rendered, "task-push-model", "Job").values()
    container = _container(job, "push-model")
    assert container["command"][:4] == ["python", PUSH_SCRIPT, "--replicas", container["command"][3]]
    host, port = container["command"][3].rsplit(":", 1)
    assert container["command"][4:] == ["--"]
    replicas = _objects(rendered, "production", "Service")[host]
    triton = _objects(rendered, "production", "Deployment")["triton"]
    assert replicas["spec"]["clusterIP"] == "None", "a headless Service resolves to every pod"
    assert _selects({"matchLabels": replicas["spec"]["selector"]}, triton["spec"]["template"]["metadata"]["labels"])
    assert int(port) == _service_port(replicas, "grpc")["port"] == _port(_container(triton, "triton"), "grpc")
    command, options = _cli_params(["export", *container["args"]])
    assert options["model"] in MODELS and not options["push"], "the script adds one --push per replica"
    triton_args = dict(a.split("=", 1) for a in _container(triton, "triton")["args"][1:] if "=" in a)
    assert str(options["repository"]) == triton_args["--model-repository"]
    _, volume = _mount_of(job, container, str(options["repository"]))
    assert _claim(volume) == "model-repository"
    assert _mount_of(job, container, str(options["checkpoint"]))[1]["persistentVolumeClaim"]
    assert job["spec"]["backoffLimit"] == 0
    assert _objects(rendered, "task-push-model", "Job")["push-model"]["metadata"]["namespace"] == "instructrec"


def test_push_script_adds_one_push_per_replica() -> None:
    push = runpy.run_path(str(ROOT / "docker" / "push_replicas.py"))
    assert push["export_command"](["10.0.0.7:8001", "[fd00::3]:8001"], ["ranker", "--checkpoint", "/c"]) == [
        "instructrec", "export", "ranker", "--checkpoint", "/c", "--push", "10.0.0.7:8001", "--push", "[fd00::3]:8001"]
    assert "127.0.0.1:8001" in push["replica_addresses"]("127.0.0.1", 8001)


# --------------------------------------------------------------------------------------------------------
# Network policies, autoscaling, monitoring
# --------------------------------------------------------------------------------------------------------


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
    return True


def test_network_policies_admit_exactly_the_intended_callers(rendered: dict) -> None:
    policies = _objects(rendered, "production", "NetworkPolicy").values()
    workloads = _workloads(rendered, "production") | _workloads(rendered, "task-push-model")
    pods = {name: _pod(w) | {"labels": w["spec"]["template"]["metadata"]["labels"]} for name, w in workloads.items()}

    def admitted(target: str, source: str | None, port_name: str) -> bool:
        """Whether a pod (None: a pod in another namespace) may reach the target's named port."""
        target_pod = pods[target]
        ports = {p["name"] for c in target_pod["containers"] for p in c.get("ports", [])}
        assert port_name in ports
        for policy in policies:
            if not _selects(policy["spec"]["podSelector"], target_pod["labels"]):
                continue
            for rule in policy["spec"].get("ingress", []):
                if rule.get("ports") and port_name not in {p["port"] for p in rule["ports"]}:
                    continue
                peers = rule.get("from")
                if not peers:
                    return True
                for peer in peers:
                    if source is not None and "podSelector" in peer and "namespaceSelector" not in peer and \
                            _selects(peer["podSelector"], pods[source]["labels"]):
                        return True
        return False

    for policy in policies:  # every named port a policy opens exists on some pod it selects
        selected = [p for p in pods.values() if _selects(policy["spec"]["podSelector"], p["labels"])]
        assert selected, policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert any(port["port"] in {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
                           for pod in selected), (policy["metadata"]["name"], port["port"])

    assert admitted("gateway", None, "grpc")
    for backend in ("instruction", "retrieval", "ranking"):
        assert admitted(backend, "gateway", "grpc")
        assert not admitted(backend, None, "grpc")
        assert not admitted(backend, "triton", "grpc")
        assert admitted("triton", backend, "grpc")
    assert admitted("triton", "build-index", "grpc") and admitted("triton", "build-index", "http")
    assert admitted("triton", "push-model", "grpc")
    assert not admitted("triton", "gateway", "grpc") and not admitted("triton", None, "grpc")
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    for name in ("gateway", "instruction", "retrieval", "ranking", "triton"):
        assert not admitted(name, None, "metrics") and not admitted(name, "instruction", "metrics")
        assert any(_selects(p["spec"]["podSelector"], pods[name]["labels"])
                   and rule.get("from") == [{"namespaceSelector": {"matchLabels": monitoring}}]
                   and {port["port"] for port in rule["ports"]} == {"metrics"}
                   for p in policies for rule in p["spec"].get("ingress", [])), f"Prometheus cannot scrape {name}"


def test_triton_autoscaler_metric_is_the_prometheus_adapter_rule(rendered: dict) -> None:
    values = yaml.safe_load((ROOT / "k8s/components/autoscaling/prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa = _objects(rendered, "production", "HorizontalPodAutoscaler")["triton"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert "nv_inference_request_success" in rule["metricsQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    monitor = _objects(rendered, "production", "PodMonitor")["triton"]
    triton = _objects(rendered, "production", "Deployment")["triton"]
    assert _selects(monitor["spec"]["selector"], triton["spec"]["template"]["metadata"]["labels"])
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    services = _objects(rendered, "production", "PodMonitor")["instructrec-services"]
    for name, (deployment, _, _) in _service_deployments(rendered, "production").items():
        assert _selects(services["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]), name


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------


def _pins(path: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    return {canonicalize_name(r.name): r for r in requirements}


def _project_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def _third_party_imports(paths: list[Path], local: set[str]) -> set[str]:
    modules = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - local - {"__future__"}


@functools.cache
def _installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    return {canonicalize_name(d) for d in _installed_distributions().get(module, [])}


@pytest.mark.parametrize(("requirements", "sources", "local"), [
    ("requirements-services.txt", "services/**/*.py", {"services", "instructrec"}),
    ("requirements-triton.txt", "model_repository/*/1/model.py", {"triton_python_backend_utils", "triton_adapter"}),
])
def test_image_requirements_are_pinned_within_pyproject_and_cover_the_imports(
    requirements: str, sources: str, local: set[str]
) -> None:
    pins = _pins(ROOT / "docker" / requirements)
    project = _project_requirements()
    for name, pin in pins.items():
        (specifier,) = list(pin.specifier)
        assert specifier.operator == "==", f"{name} is not pinned"
        assert name in project, f"{name} is not a dependency in pyproject.toml"
        assert project[name].specifier.contains(specifier.version, prereleases=True), (name, specifier.version)
    paths = [p for p in sorted(ROOT.glob(sources)) if p.relative_to(ROOT).as_posix() not in OFFLINE_ONLY]
    for module in _third_party_imports(paths, local):
        assert _distributions(module) & set(pins), f"{module} (imported in {sources}) is not in {requirements}"


# Shared-domain modules used by training and export only (torch inside): no service imports them, so the
# services image needs none of their dependencies.
OFFLINE_ONLY = {"services/core/modeltext.py"}


def test_services_never_import_the_offline_only_modules() -> None:
    for path in sorted(ROOT.glob("services/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in OFFLINE_ONLY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            offline = {m.replace("/", ".").removesuffix(".py") for m in OFFLINE_ONLY}
            assert not names & offline, f"{rel} imports {names & offline}"


def test_triton_image_is_pinned_and_keeps_nvidia_entrypoint() -> None:
    dockerfile = (ROOT / "docker" / "triton.Dockerfile").read_text()
    (base,) = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    image, tag = base.rsplit(":", 1)
    assert image == "nvcr.io/nvidia/tritonserver" and tag[:2].isdigit() and tag != "latest"
    assert "ENTRYPOINT" not in dockerfile
    assert "USER 10001" in dockerfile


# --------------------------------------------------------------------------------------------------------
# The init containers' wait step
# --------------------------------------------------------------------------------------------------------


def test_wait_for_sees_files_and_ready_urls(tmp_path: Path) -> None:
    wait_for = runpy.run_path(str(ROOT / "docker" / "wait_for.py"))
    present = tmp_path / "items.jsonl"
    present.write_text("{}")

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200 if self.path == "/v2/health/ready" else 400)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert wait_for["is_ready"](str(present))
        assert not wait_for["is_ready"](str(tmp_path / "missing"))
        assert wait_for["is_ready"](f"{base}/v2/health/ready")
        assert not wait_for["is_ready"](f"{base}/v2/models/ranker/ready")
        wait_for["wait_for"]([str(present), f"{base}/v2/health/ready"], interval_s=0.01)
    finally:
        server.shutdown()


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_the_gateways_peers_are_headless_so_its_channels_balance_requests_over_their_pods(rendered, overlay) -> None:
    services = _objects(rendered, overlay, "Service")
    gateway = _container(_objects(rendered, overlay, "Deployment")["gateway"], "gateway")
    for peer in ("instruction", "retrieval", "ranking"):
        service = services[peer]
        assert service["spec"]["clusterIP"] == "None", peer
        assert service["spec"]["publishNotReadyAddresses"] is True, peer  # the name never resolves to nothing
        host, port = _env(gateway)[f"GATEWAY_{peer.upper()}_ADDR"].rsplit(":", 1)
        assert host == peer
        # Callers reach the pods directly, so the Service port must be the container's.
        deployment = _objects(rendered, overlay, "Deployment")[peer]
        assert int(port) == _service_port(service, "grpc")["port"] == _port(_container(deployment, peer), "grpc")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_preference_cronjob_writes_the_store_the_instruction_replicas_read(rendered: dict, overlay: str) -> None:
    from services.instruction.precompute import main as precompute_main

    cron = _objects(rendered, overlay, "CronJob")["precompute-preferences"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = {"spec": cron["spec"]["jobTemplate"]["spec"]}
    container = _container(job, "precompute-preferences")
    module, *argv = container["args"]
    assert module == "services.instruction.precompute" and "--snapshot" in argv  # replicas read it immutable
    with pytest.raises(SystemExit) as help_exit:  # the module's own parser accepts these arguments
        precompute_main([*argv, "--help"])
    assert help_exit.value.code == 0
    env = _env(container)
    for name in env:
        _field(SETTINGS["instruction"], name)  # every variable is an instruction setting
    deployment, instruction, instruction_env = _service_deployments(rendered, overlay)["instruction"]
    store = str(_setting("instruction", instruction_env, "INSTRUCTION_PREFERENCE_STORE_PATH"))
    assert env["INSTRUCTION_PREFERENCE_STORE_PATH"] == store
    assert env["INSTRUCTION_CATALOG_PATH"] == instruction_env["INSTRUCTION_CATALOG_PATH"]
    assert _setting("instruction", instruction_env, "INSTRUCTION_PREFERENCE_STORE_READONLY") is True
    job_mount, job_volume = _mount_of(job, container, store)
    mount, volume = _mount_of(deployment, instruction, store)
    assert _claim(job_volume) == _claim(volume) and job_mount == mount
    interactions = argv[argv.index("--interactions") + 1]
    gateway = _service_deployments(rendered, overlay)["gateway"][2]
    assert interactions == gateway["GATEWAY_INTERACTIONS_PATH"]  # the histories the gateway serves
