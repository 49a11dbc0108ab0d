"""The layers of docs/architecture.md, checked on the import statements of every module.

core <- common <- each service; tools and scripts see services only through core and common (the launcher,
tools/runtime/stack.py, starts the services and reads their settings); the shared constants live in contracts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
SERVICES = ("gateway", "instruction", "retrieval", "ranking")
# Third-party packages the pure domain must not import (transport, model server, settings).
NOT_IN_CORE = ("grpc", "grpc_health", "grpc_reflection", "tritonclient", "pydantic_settings", "pydantic",
               "instructrec", "prometheus_client")
LAUNCHER = "tools/runtime/stack.py"


def _imports(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in the file names (nested ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _files(pattern: str) -> list[Path]:
    return sorted(p for p in ROOT.glob(pattern) if ".venv" not in p.parts)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


@pytest.mark.parametrize("path", _files("services/core/*.py"), ids=lambda p: p.name)
def test_core_is_pure_and_imports_only_itself(path: Path) -> None:
    for module in _imports(path):
        assert module.split(".")[0] not in NOT_IN_CORE, f"{path.name} imports {module}"
        layer = _layer(module)
        assert layer in (None, "core"), f"{path.name} imports {module}"


@pytest.mark.parametrize("path", _files("services/common/*.py"), ids=lambda p: p.name)
def test_common_imports_only_core_and_itself(path: Path) -> None:
    for module in _imports(path):
        assert _layer(module) in (None, "core", "common"), f"{path.name} imports {module}"


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_core_common_and_itself_only(service: str) -> None:
    for path in _files(f"services/{service}/*.py"):
        for module in _imports(path):
            assert _layer(module) in (None, "core", "common", service), f"{path} imports {module}"


@pytest.mark.parametrize("path", [*_files("tools/**/*.py"), *_files("scripts/**/*.py")],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_tools_and_scripts_see_services_only_through_core_and_common(path: Path) -> None:
    if path.relative_to(ROOT).as_posix() == LAUNCHER:
        return
    for module in _imports(path):
        assert _layer(module) in (None, "core", "common"), f"{path.relative_to(ROOT)} imports {module}"
