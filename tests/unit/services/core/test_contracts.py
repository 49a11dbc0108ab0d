"""Each constant that two stages must agree on is defined once, in services/core/contracts.py."""

from __future__ import annotations

import ast
from pathlib import Path

from services.core import contracts

ROOT = Path(__file__).resolve().parents[4]
CONTRACTS = ROOT / "services" / "core" / "contracts.py"
SHARED_NAMES = {n for n in vars(contracts) if n.isupper()}
# String values that only the contracts module may spell (tensor names unique to one contract, the prefix).
SHARED_LITERALS = {contracts.RANKER_ANSWER_PREFIX, contracts.CANDIDATE_SCORES_OUTPUT, contracts.ONNX_LABEL_LOGITS}


def _sources() -> list[Path]:
    paths = [*ROOT.glob("services/**/*.py"), *ROOT.glob("tools/**/*.py"), *ROOT.glob("scripts/**/*.py"),
             *ROOT.glob("model_repository/*/1/*.py")]
    return sorted(p for p in paths if p != CONTRACTS and ".venv" not in p.parts)


def _assigned_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_shared_constants_are_defined_only_in_contracts() -> None:
    redefined = {}
    for path in _sources():
        again = _assigned_names(ast.parse(path.read_text())) & SHARED_NAMES
        if again:
            redefined[path.relative_to(ROOT).as_posix()] = sorted(again)
    assert not redefined


def test_shared_string_values_are_spelled_only_in_contracts() -> None:
    spelled = {}
    for path in _sources():
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        found = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and id(n) not in docstrings and n.value in SHARED_LITERALS}
        if found:
            spelled[path.relative_to(ROOT).as_posix()] = sorted(found)
    assert not spelled


def test_the_temperature_is_one_number() -> None:
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    name = getattr(t, "id", getattr(t, "attr", ""))
                    again = "temperature" in name.lower() and node.value.value == contracts.RETRIEVAL_TEMPERATURE
                    assert not again, f"{path.relative_to(ROOT)} defines {name} = {node.value.value} (use contracts)"
