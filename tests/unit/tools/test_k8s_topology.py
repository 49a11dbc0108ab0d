"""The manifests' jobs, tasks, network policies, autoscalers and topology agree with the code they deploy
(split from test_k8s.py)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import runpy
import socket
import sys
from pathlib import PurePosixPath

import pytest
import yaml

from tests.unit.tools import k8s_rendered as k8s


def test_build_index_waits_for_its_inputs_and_for_triton(rendered: dict) -> None:
    job = k8s._objects(rendered, "production", "Job")["build-index"]
    _, options = k8s._cli_params(k8s._container(job, "build-index")["args"])
    triton = k8s._container(k8s._objects(rendered, "production", "Deployment")["triton"], "triton")
    waits = k8s._wait_targets(job)
    assert f"{options['data_dir']}/items.jsonl" in waits and f"{options['data_dir']}/train.csv" in waits
    assert f"http://triton:{k8s._port(triton, 'http')}/v2/models/text_encoder/ready" in waits


def test_add_items_task_grows_the_catalog_and_index_the_services_read(rendered: dict) -> None:
    (job,) = k8s._objects(rendered, "task-add-items", "Job").values()
    container = k8s._container(job, "add-items")
    assert "command" not in container  # the tools image's entrypoint is `instructrec`
    command, options = k8s._cli_params(container["args"])
    assert command == "add-items"
    retrieval = k8s._env(k8s._container(k8s._objects(rendered, "production", "Deployment")["retrieval"], "retrieval"))
    assert f"{options['data_dir']}/items.jsonl" == retrieval["RETRIEVAL_CATALOG_PATH"]
    assert str(options["index_dir"]) == retrieval["RETRIEVAL_INDEX_DIR"]
    triton = k8s._container(k8s._objects(rendered, "production", "Deployment")["triton"], "triton")
    assert options["triton"] == f"triton:{k8s._port(triton, 'grpc')}"
    for path in (options["items"], options["data_dir"], options["index_dir"]):
        mount, volume = k8s._mount_of(job, container, str(path))
        assert k8s._claim(volume) == "instructrec-data"
    assert not any(m.get("readOnly") for m in container["volumeMounts"] if m["mountPath"] == mount)
    assert job["spec"]["backoffLimit"] == 0 and job["metadata"]["namespace"] == "instructrec"


def test_services_containers_run_the_service_modules(rendered: dict) -> None:
    dockerfile = (k8s.ROOT / "docker" / "services.Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    for name, (_, container, _) in k8s._service_deployments(rendered, "production").items():
        assert container["args"] == [f"services.{name}"] and "command" not in container
        assert importlib.util.find_spec(f"services.{name}.__main__") is not None
    images = {c["image"].split("/")[-1].split(":")[0] for w in k8s._workloads(rendered, "production").values()
              for c in k8s._pod(w)["containers"] + k8s._pod(w).get("initContainers", [])}
    assert images == {"instructrec-services", "instructrec-tools", "instructrec-triton",
                      "opentelemetry-collector"}  # the monitoring component's trace collector, upstream's image


def test_push_task_exports_once_and_pushes_to_every_triton_replica(rendered: dict) -> None:
    (job,) = k8s._objects(rendered, "task-push-model", "Job").values()
    container = k8s._container(job, "push-model")
    assert container["command"][:4] == ["python", k8s.PUSH_SCRIPT, "--replicas", container["command"][3]]
    host, port = container["command"][3].rsplit(":", 1)
    assert container["command"][4:] == ["--"]
    replicas = k8s._objects(rendered, "production", "Service")[host]
    triton = k8s._objects(rendered, "production", "Deployment")["triton"]
    assert replicas["spec"]["clusterIP"] == "None", "a headless Service resolves to every pod"
    assert _selects({"matchLabels": replicas["spec"]["selector"]}, triton["spec"]["template"]["metadata"]["labels"])
    container_port = k8s._port(k8s._container(triton, "triton"), "grpc")
    assert int(port) == k8s._service_port(replicas, "grpc")["port"] == container_port
    command, options = k8s._cli_params(["export", *container["args"]])
    assert options["model"] in k8s.MODELS and not options["push"], "the script adds one --push per replica"
    triton_args = dict(a.split("=", 1) for a in k8s._container(triton, "triton")["args"][1:] if "=" in a)
    assert str(options["repository"]) == triton_args["--model-repository"]
    _, volume = k8s._mount_of(job, container, str(options["repository"]))
    assert k8s._claim(volume) == "model-repository"
    assert k8s._mount_of(job, container, str(options["checkpoint"]))[1]["persistentVolumeClaim"]
    assert job["spec"]["backoffLimit"] == 0
    assert k8s._objects(rendered, "task-push-model", "Job")["push-model"]["metadata"]["namespace"] == "instructrec"


def test_push_script_adds_one_push_per_replica() -> None:
    push = runpy.run_path(str(k8s.ROOT / "docker" / "push_replicas.py"))
    assert push["export_command"](["10.0.0.7:8001", "[fd00::3]:8001"], ["ranker", "--checkpoint", "/c"]) == [
        "instructrec", "export", "ranker", "--checkpoint", "/c", "--push", "10.0.0.7:8001", "--push", "[fd00::3]:8001"]
    assert "127.0.0.1:8001" in push["replica_addresses"]("127.0.0.1", 8001)


def _cron_as_job(cron: dict) -> dict:
    """A CronJob as the Job it creates (its jobTemplate), for the workload helpers."""
    return {"kind": "Job", "metadata": cron["metadata"], "spec": cron["spec"]["jobTemplate"]["spec"]}


def _retrain_command(container: dict, monkeypatch: pytest.MonkeyPatch, replicas: str) -> list[str]:
    """The command line the retrain container's wrapper would exec, with ``replicas`` resolved instead of its own."""
    executed: list[list[str]] = []

    def execvp(file: str, argv: list[str]) -> None:
        executed.append(argv)
        raise SystemExit(0)

    command = container["command"]
    assert command[:2] == ["python", "-c"] and len(command) == 4, "python -c SCRIPT REPLICAS, then the CLI's args"
    monkeypatch.syspath_prepend(str(k8s.ROOT / "docker"))  # the image's /opt/instructrec/push_replicas.py
    monkeypatch.setattr(sys, "argv", ["-c", replicas, *container["args"]])
    monkeypatch.setattr(os, "execvp", execvp)
    with pytest.raises(SystemExit):
        exec(compile(command[2], "retrain-wrapper", "exec"), {"__name__": "__main__"})
    (argv,) = executed
    return argv


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_retrain_cronjob_trains_on_the_store_and_pushes_to_every_triton_and_the_index_retrieval_reads(
    rendered: dict, overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cron = k8s._objects(rendered, overlay, "CronJob")["retrain"]
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and len(spec["schedule"].split()) == 5
    assert spec["startingDeadlineSeconds"] > 0
    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] <= 2 and job_spec["activeDeadlineSeconds"] and job_spec["ttlSecondsAfterFinished"]
    job = _cron_as_job(cron)
    pod = k8s._pod(job)
    labels = {"app.kubernetes.io/name": "retrain", "app.kubernetes.io/component": "batch"}
    assert labels.items() <= cron["metadata"]["labels"].items()
    assert labels.items() <= job_spec["template"]["metadata"]["labels"].items()
    account = k8s._objects(rendered, overlay, "ServiceAccount")[pod["serviceAccountName"]]
    assert pod["serviceAccountName"] == "retrain" and account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] and security["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod["containers"] + pod["initContainers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"] and c["resources"]["limits"]
    container = k8s._container(job, "retrain")
    assert container["image"].split("/")[-1].split(":")[0] == "instructrec-tools"

    # The wrapper resolves the headless Service of the Triton pods and passes one --triton per pod.
    host, port = container["command"][3].rsplit(":", 1)
    replicas = k8s._objects(rendered, overlay, "Service")[host]
    triton = k8s._objects(rendered, overlay, "Deployment")["triton"]
    triton_container = k8s._container(triton, "triton")
    assert replicas["spec"]["clusterIP"] == "None", "a headless Service resolves to every pod"
    assert _selects({"matchLabels": replicas["spec"]["selector"]}, triton["spec"]["template"]["metadata"]["labels"])
    assert int(port) == k8s._service_port(replicas, "grpc")["port"] == k8s._port(triton_container, "grpc")
    argv = _retrain_command(container, monkeypatch, "localhost:8001")
    assert argv[0] == "instructrec" and "--triton" not in container["args"], "the wrapper adds one per replica"
    _, options = k8s._cli_params(argv[1:])  # parsed by the real `instructrec retrain`
    resolved = {info[4][0] for info in socket.getaddrinfo("localhost", 8001, type=socket.SOCK_STREAM)}
    assert len(options["triton"]) == len(resolved) and "127.0.0.1:8001" in options["triton"]

    # Reads the catalog prepare-data wrote and the store the gateways write, with the same credentials.
    build_index = k8s._objects(rendered, overlay, "Job")["build-index"]
    _, index_options = k8s._cli_params(k8s._container(build_index, "build-index")["args"])
    assert options["data_dir"] == index_options["data_dir"]
    gateway = k8s._container(k8s._objects(rendered, overlay, "Deployment")["gateway"], "gateway")
    assert options["store"] == k8s._env(gateway)["GATEWAY_INTERACTION_STORE"]
    host, port = options["store"].removeprefix("postgresql://").rsplit(":", 1)
    database = k8s._objects(rendered, overlay, "Service")[host]
    assert int(port) == k8s._service_port(database, "postgres")["port"]

    def secret_refs(c: dict) -> dict[str, tuple[str, str]]:
        return {v["name"]: (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
                for v in c.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})}

    libpq = {"PGUSER", "PGPASSWORD", "PGDATABASE"}
    credentials = {k: v for k, v in secret_refs(container).items() if k in libpq}
    assert set(credentials) == libpq
    assert credentials == {k: v for k, v in secret_refs(gateway).items() if k in libpq}

    # Writes the repository Triton serves and the sequence index retrieval reads, on the same claims and paths.
    triton_args = dict(a.split("=", 1) for a in triton_container["args"][1:] if "=" in a)
    assert str(options["repository"]) == triton_args["--model-repository"]
    retrieval = k8s._objects(rendered, overlay, "Deployment")["retrieval"]
    retrieval_container = k8s._container(retrieval, "retrieval")
    index_dir = str(k8s._setting("retrieval", k8s._env(retrieval_container), "RETRIEVAL_SEQUENCE_INDEX_DIR"))
    assert str(options["sequence_index_dir"]) == index_dir
    assert index_options["sequence_out_dir"] is not None and str(index_options["sequence_out_dir"]) == index_dir
    for path, reader, reader_container in ((str(options["repository"]), triton, triton_container),
                                           (index_dir, retrieval, retrieval_container)):
        mount, volume = k8s._mount_of(job, container, path)
        reader_mount, reader_volume = k8s._mount_of(reader, reader_container, path)
        assert k8s._claim(volume) == k8s._claim(reader_volume) and mount == reader_mount, path
        assert not volume["persistentVolumeClaim"].get("readOnly"), f"{path} must be writable"
        assert not any(m["mountPath"] == mount and m.get("readOnly") for m in container["volumeMounts"]), path
    # The run folder and /tmp are scratch: a fresh run every night (never resumes last night's checkpoint).
    for path in (str(options["out_dir"]), "/tmp"):
        assert "emptyDir" in k8s._mount_of(job, container, path)[1], path
    assert options["train_minutes"] * 60 < job_spec["activeDeadlineSeconds"]

    # Waits for what it reads, on the paths the main container reads them from.
    waits = k8s._wait_targets(job)
    assert f"{options['data_dir']}/items.jsonl" in waits
    assert f"http://triton:{k8s._port(triton_container, 'http')}/v2/models/sequence_encoder/ready" in waits
    from tools.runtime.assets import READY_MARKER

    assert f"{options['repository']}/{READY_MARKER}" in waits
    for target in waits:
        if not target.startswith("http"):
            init = pod["initContainers"][0]
            assert PurePosixPath(k8s._mount_of(job, init, target)[0]) == PurePosixPath(
                k8s._mount_of(job, container, target)[0])


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_retrain_speaks_tls_to_triton_exactly_where_triton_requires_it(rendered: dict, overlay: str) -> None:
    triton = k8s._container(k8s._objects(rendered, overlay, "Deployment")["triton"], "triton")
    mutual = "--grpc-use-ssl-mutual=true" in triton["args"]
    job = _cron_as_job(k8s._objects(rendered, overlay, "CronJob")["retrain"])
    container = k8s._container(job, "retrain")
    env = {k: v for k, v in k8s._env(container).items() if v is not None}
    tls = {k: v for k, v in env.items() if k.startswith("INSTRUCTREC_TRITON__TLS__")}
    if not mutual:
        assert tls == {}
        return
    assert tls["INSTRUCTREC_TRITON__TLS__ENABLED"] == "true"
    # The pods are dialled by address: the name to verify is the one in Triton's certificate, its Service's.
    assert tls["INSTRUCTREC_TRITON__TLS__SERVER_NAME"] in k8s._objects(rendered, overlay, "Service")
    assert k8s._objects(rendered, overlay, "Service")[tls["INSTRUCTREC_TRITON__TLS__SERVER_NAME"]]["spec"].get(
        "clusterIP") != "None"
    for var in ("CA_PATH", "CERT_PATH", "KEY_PATH"):
        _, volume = k8s._mount_of(job, container, tls[f"INSTRUCTREC_TRITON__TLS__{var}"])
        assert volume["secret"]["secretName"] == "retrain-tls", var


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
    policies = k8s._objects(rendered, "production", "NetworkPolicy").values()
    workloads = (k8s._workloads(rendered, "production") | k8s._workloads(rendered, "task-push-model")
                 | k8s._workloads(rendered, "task-add-items") | k8s._objects(rendered, "production", "StatefulSet")
                 | {n: _cron_as_job(c) for n, c in k8s._objects(rendered, "production", "CronJob").items()})
    pods = {name: k8s._pod(w) | {"labels": w["spec"]["template"]["metadata"]["labels"]}
            for name, w in workloads.items()}

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
    # add-items embeds the new items with the text encoder Triton serves, and touches nothing else.
    assert admitted("triton", "add-items", "grpc") and not admitted("interactions-db", "add-items", "postgres")
    # The retrain CronJob waits for sequence_encoder (HTTP), pushes it (gRPC) and reads the interaction store.
    assert admitted("triton", "retrain", "grpc") and admitted("triton", "retrain", "http")
    assert admitted("interactions-db", "retrain", "postgres")
    for backend in ("instruction", "retrieval", "ranking"):
        assert not admitted(backend, "retrain", "grpc"), backend
    assert not admitted("triton", "gateway", "grpc") and not admitted("triton", None, "grpc")
    assert admitted("interactions-db", "gateway", "postgres")
    for other in ("instruction", "retrieval", "ranking", "triton", "build-index", "push-model",
                  "precompute-preferences", None):
        assert not admitted("interactions-db", other, "postgres"), other
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    for name in ("gateway", "instruction", "retrieval", "ranking", "triton"):
        assert not admitted(name, None, "metrics") and not admitted(name, "instruction", "metrics")
        assert any(_selects(p["spec"]["podSelector"], pods[name]["labels"])
                   and rule.get("from") == [{"namespaceSelector": {"matchLabels": monitoring}}]
                   and {port["port"] for port in rule["ports"]} == {"metrics"}
                   for p in policies for rule in p["spec"].get("ingress", [])), f"Prometheus cannot scrape {name}"


def test_triton_autoscaler_metric_is_the_prometheus_adapter_rule(rendered: dict) -> None:
    values = yaml.safe_load((k8s.ROOT / "k8s/components/autoscaling/prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa = k8s._objects(rendered, "production", "HorizontalPodAutoscaler")["triton"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert "nv_inference_request_success" in rule["metricsQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    monitor = k8s._objects(rendered, "production", "PodMonitor")["triton"]
    triton = k8s._objects(rendered, "production", "Deployment")["triton"]
    assert _selects(monitor["spec"]["selector"], triton["spec"]["template"]["metadata"]["labels"])
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    services = k8s._objects(rendered, "production", "PodMonitor")["instructrec-services"]
    for name, (deployment, _, _) in k8s._service_deployments(rendered, "production").items():
        assert _selects(services["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]), name


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_the_gateways_peers_are_headless_so_its_channels_balance_requests_over_their_pods(rendered, overlay) -> None:
    services = k8s._objects(rendered, overlay, "Service")
    gateway = k8s._container(k8s._objects(rendered, overlay, "Deployment")["gateway"], "gateway")
    for peer in ("instruction", "retrieval", "ranking"):
        service = services[peer]
        assert service["spec"]["clusterIP"] == "None", peer
        assert service["spec"]["publishNotReadyAddresses"] is True, peer  # the name never resolves to nothing
        host, port = k8s._env(gateway)[f"GATEWAY_{peer.upper()}_ADDR"].rsplit(":", 1)
        assert host == peer
        # Callers reach the pods directly, so the Service port must be the container's.
        deployment = k8s._objects(rendered, overlay, "Deployment")[peer]
        container_port = k8s._port(k8s._container(deployment, peer), "grpc")
        assert int(port) == k8s._service_port(service, "grpc")["port"] == container_port


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_preference_cronjob_writes_the_store_the_instruction_replicas_read(rendered: dict, overlay: str) -> None:
    from services.instruction.precompute import main as precompute_main

    cron = k8s._objects(rendered, overlay, "CronJob")["precompute-preferences"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = {"spec": cron["spec"]["jobTemplate"]["spec"]}
    container = k8s._container(job, "precompute-preferences")
    module, *argv = container["args"]
    assert module == "services.instruction.precompute" and "--snapshot" in argv  # replicas read it immutable
    with pytest.raises(SystemExit) as help_exit:  # the module's own parser accepts these arguments
        precompute_main([*argv, "--help"])
    assert help_exit.value.code == 0
    env = k8s._env(container)
    for name in env:
        k8s._field(k8s.SETTINGS["instruction"], name)  # every variable is an instruction setting
    deployment, instruction, instruction_env = k8s._service_deployments(rendered, overlay)["instruction"]
    store = str(k8s._setting("instruction", instruction_env, "INSTRUCTION_PREFERENCE_STORE_PATH"))
    assert env["INSTRUCTION_PREFERENCE_STORE_PATH"] == store
    assert env["INSTRUCTION_CATALOG_PATH"] == instruction_env["INSTRUCTION_CATALOG_PATH"]
    assert k8s._setting("instruction", instruction_env, "INSTRUCTION_PREFERENCE_STORE_READONLY") is True
    job_mount, job_volume = k8s._mount_of(job, container, store)
    mount, volume = k8s._mount_of(deployment, instruction, store)
    assert k8s._claim(job_volume) == k8s._claim(volume) and job_mount == mount
    interactions = argv[argv.index("--interactions") + 1]
    gateway = k8s._service_deployments(rendered, overlay)["gateway"][2]
    assert interactions == gateway["GATEWAY_INTERACTIONS_PATH"]  # the histories the gateway serves
