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
LAUNCHER = "tools/runtime/"


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
    if path.relative_to(ROOT).as_posix().startswith(LAUNCHER):
        return
    for module in _imports(path):
        assert _layer(module) in (None, "core", "common"), f"{path.relative_to(ROOT)} imports {module}"


def _tools_package(module: str) -> str | None:
    """``tools.<package>`` for a module inside a package of tools/; None for a root module or another package."""
    parts = module.split(".")
    if parts[0] != "tools" or len(parts) < 2 or not (ROOT / "tools" / parts[1]).is_dir():
        return None
    return parts[1]


def _tools_graph() -> dict[str, set[str]]:
    """Which tools packages each tools package imports (every import, lazy ones inside functions too)."""
    graph: dict[str, set[str]] = {}
    for path in _files("tools/**/*.py"):
        source = _tools_package(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if source is None:
            continue
        targets = {_tools_package(m) for m in _imports(path)} - {None, source}
        graph.setdefault(source, set()).update(targets)
    return graph


def test_tools_core_imports_no_other_tools_package() -> None:
    assert _tools_graph().get("core", set()) == set()


def test_no_two_tools_packages_import_each_other() -> None:
    graph = _tools_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a, {b}))
    assert not cycles, cycles


def test_nothing_outside_the_lab_imports_it() -> None:
    lab = {("tools", "lab"), ("tests", "unit", "tools", "lab")}  # the experiments and their own tests
    outside = [p for p in _files("**/*.py")
               if not any(p.relative_to(ROOT).parts[:len(prefix)] == prefix for prefix in lab)]
    importers = sorted(f"{p.relative_to(ROOT)} imports {m}" for p in outside for m in _imports(p)
                       if m == "tools.lab" or m.startswith("tools.lab."))
    assert not importers, importers
