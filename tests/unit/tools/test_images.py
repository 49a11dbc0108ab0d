"""The images' dependency pins against pyproject.toml and the imports they serve, and the helper scripts the
images carry (split from test_k8s.py, which checks the rendered manifests)."""


from __future__ import annotations

import ast
import functools
import http.server
import importlib
import importlib.metadata
import importlib.util
import runpy
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]


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
