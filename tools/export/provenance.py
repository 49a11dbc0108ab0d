"""Where an export came from: checkpoint hashes, tool and library versions, the ``metadata.json`` content."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")


def file_sha256(path: Path) -> str:
    """sha256 of one file, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_sha256(model_dir: Path) -> dict[str, str]:
    """sha256 of each weight file (``*.safetensors``, ``*.bin``, ``*.pt``) in a checkpoint folder."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    return {p.name: file_sha256(p) for p in files}


def combined_sha256(file_hashes: dict[str, str]) -> str:
    """One digest for a checkpoint: sha256 over its files' ``name:sha256`` lines, sorted by name."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(file_hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def tool_version() -> str:
    """The installed ``instructrec`` version, ``unknown`` when run from a checkout without installing it."""
    try:
        return importlib.metadata.version("instructrec")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an export's numbers (those installed)."""
    versions = {}
    for package in _LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def checkpoint_provenance(model_dir: Path) -> dict[str, Any]:
    """``metadata.json`` source fields of an export made from the plain checkpoint ``model_dir``."""
    hashes = weights_sha256(model_dir)
    return {
        "source_checkpoint": str(Path(model_dir).resolve()),
        "source_weights_sha256": hashes,
        "source_sha256": combined_sha256(hashes),
        "base_model": None,
        "adapter": None,
    }


def build_metadata(
    name: str, version: int, model_dir: Path, *, started: float, provenance: dict[str, Any] | None, **extra: Any
) -> dict[str, Any]:
    """``metadata.json`` content.

    Args:
        name: Model name.
        version: The version being written.
        model_dir: The checkpoint exported.
        started: ``time.perf_counter()`` when the export began.
        provenance: Replaces the source fields (e.g. a merged LoRA adapter's); ``None`` describes ``model_dir``.
        **extra: The model kind's fields (format, parity figures, canary, ...).
    """
    return {
        "model": name,
        "version": version,
        **checkpoint_provenance(model_dir),
        **(provenance or {}),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "export_seconds": round(time.perf_counter() - started, 2),
        "tool": "tools.export",
        "tool_version": tool_version(),
        "libraries": library_versions(),
        **extra,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON with sorted keys."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
