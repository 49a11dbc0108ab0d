"""A data set's workspace: everything one catalog produces, in one folder, read from there at run time.

``instructrec bootstrap`` fills it; ``instructrec run --data-dir <workspace>`` serves it. One data set never
writes into another's workspace, and what was fitted for it is what is served:

    <root>/
      workspace.json          the manifest: name, the catalog's digest and item ids' digest, each step's record
      data/                   the validated split (items.jsonl, train.csv, valid/test, synonyms.json)
      sequence/               the sequence model: each training run in seed-<n>/ (checkpoint.pt, record.json, model/),
                              the served one's model/ and record.json beside them (the best on validation)
      model_repository/       what Triton serves for this data set: its own sequence_encoder, and the shared
                              models (text_encoder, ranker, preference_generator, request_reader) linked in
      index/  index-sequence/ the text index (with the intent heads) and the sequence index
      retrieval_fusion.json   the retrieval weights fitted on this data set's validation users (served)
      evaluation.json         test users: the served retrieval rule beside popularity and the sequence model
      interactions.sqlite3    the gateway's interaction store, seeded from data/train.csv
      preferences.sqlite      the instruction service's preference statements
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "workspace.json"
WORKSPACE_STEPS = ("data", "sequence_model", "model_repository", "indexes", "fusion", "evaluation")
"""The bootstrap's steps, in order; the manifest records each one that finished."""


@dataclass(frozen=True)
class DatasetWorkspace:
    root: Path

    @classmethod
    def at(cls, root: Path | str) -> DatasetWorkspace:
        return cls(Path(root).resolve())

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def sequence_run(self) -> Path:
        return self.root / "sequence"

    @property
    def model_repository(self) -> Path:
        return self.root / "model_repository"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def sequence_index_dir(self) -> Path:
        return self.root / "index-sequence"

    @property
    def fusion_path(self) -> Path:
        return self.root / "retrieval_fusion.json"

    @property
    def evaluation_path(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def interaction_store(self) -> Path:
        return self.root / "interactions.sqlite3"

    @property
    def preference_store(self) -> Path:
        return self.root / "preferences.sqlite"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text()) if self.exists() else {}

    def write_manifest(self, manifest: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.manifest_path)


def is_workspace(path: Path | str) -> bool:
    """Whether ``path`` is a bootstrapped data set workspace (it has a manifest)."""
    return (Path(path) / MANIFEST).is_file()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]

