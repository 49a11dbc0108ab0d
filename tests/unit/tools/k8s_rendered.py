"""The rendered Kubernetes manifests and helpers to read them, for the manifest tests (test_k8s*.py)."""


from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import types
import typing
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_settings import BaseSettings

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
