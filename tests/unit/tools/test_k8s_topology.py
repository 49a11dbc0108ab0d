"""The manifests' jobs, tasks, network policies, autoscalers and topology agree with the code they deploy
(split from test_k8s.py)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import runpy

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


def test_services_containers_run_the_service_modules(rendered: dict) -> None:
    dockerfile = (k8s.ROOT / "docker" / "services.Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    for name, (_, container, _) in k8s._service_deployments(rendered, "production").items():
        assert container["args"] == [f"services.{name}"] and "command" not in container
        assert importlib.util.find_spec(f"services.{name}.__main__") is not None
    images = {c["image"].split("/")[-1].split(":")[0] for w in k8s._workloads(rendered, "production").values()
              for c in k8s._pod(w)["containers"] + k8s._pod(w).get("initContainers", [])}
    assert images == {"instructrec-services", "instructrec-tools", "instructrec-triton"}


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
                 | k8s._objects(rendered, "production", "StatefulSet"))
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
    assert not admitted("triton", "gateway", "grpc") and not admitted("triton", None, "grpc")
    assert admitted("interactions-db", "gateway", "postgres")
    for other in ("instruction", "retrieval", "ranking", "triton", "build-index", None):
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
