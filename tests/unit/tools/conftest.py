"""Fixtures of the tools' unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from tools import k8s_check


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization rendered (``kubectl kustomize``) into its objects, by kustomization name."""
    return {name: k8s_check.load_objects(k8s_check.render(path)) for name, path in k8s_check.kustomizations().items()}
