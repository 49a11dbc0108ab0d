"""The steps every export shares, around the part each model kind does its own way.

:func:`run_export` settles the parity policy and the ``config.pbtxt`` settings, picks the version folder,
has the kind load its checkpoint, then builds the version in a hidden staging folder: the kind writes and
checks its model there, and the core adds the tokenizer, the committed adapter and its helper, and
``metadata.json`` (last, with the canary), rewrites ``config.pbtxt`` and moves the folder into place. A
failed check leaves nothing behind.

A new model kind is a :class:`ModelExporter` subclass in a module of its own, listed in
``tools/export/exporters/__init__.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tools.export.config import check_serving, write_config
from tools.export.hf import offline
from tools.export.parity import FP32, ParityPolicy, parity_policy
from tools.export.provenance import build_metadata, write_json
from tools.export.samples import canary
from tools.export.versions import METADATA_FILE, copy_adapter, resolve_target, staging

logger = logging.getLogger("tools.export")


@dataclass(frozen=True, kw_only=True)
class ExportJob:
    """One export under way, as the core settled it before the model kind writes its files.

    Attributes:
        model_dir: The checkpoint folder.
        staging: The hidden folder the version is built in.
        precision: ``fp32`` or ``int8``.
        policy: What the export must reproduce of the checkpoint.
    """

    model_dir: Path
    staging: Path
    precision: str
    policy: ParityPolicy


@dataclass
class Exported:
    """What a model kind wrote and measured, for the core to record.

    Attributes:
        metadata: The kind's ``metadata.json`` fields (format, parity figures, ...).
        canary_output: What the export answered for the canary input; ``None``: any answer will do.
        config: ``config.pbtxt`` settings that the checkpoint determines (e.g. the embedding size).
        summary: Figures for the log line.
    """

    metadata: dict[str, Any]
    canary_output: Any = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    canary_input: Any = None
    """The canary's input when it depends on the checkpoint (a history of items it knows); ``None``: the
    fixed input of :func:`tools.export.samples.canary_inputs`."""


class ModelExporter:
    """One model kind's part of an export. Subclasses set ``name`` and implement :meth:`load` and :meth:`write`.

    ``load`` runs before any folder is made (a checkpoint the kind cannot take is refused early) and sets
    ``tokenizer``, which the core saves beside the model. ``write`` returns the kind's metadata with its
    ``parity`` figures.
    """

    name: ClassVar[str]
    tokenizer: Any = None

    def load(self, model_dir: Path) -> None:
        """Read the checkpoint."""
        raise NotImplementedError

    def write(self, job: ExportJob) -> Exported:
        """Write the served model into ``job.staging`` and check it against the checkpoint.

        Raises:
            ParityError: If the written model disagrees with the checkpoint beyond ``job.policy``.
        """
        raise NotImplementedError


def run_export(
    exporter: ModelExporter,
    model_dir: Path,
    repository: Path,
    version: int | None = None,
    *,
    precision: str = FP32,
    tolerance: float | None = None,
    write_model_config: bool = True,
    provenance: dict[str, Any] | None = None,
    **serving: Any,
) -> Path:
    """Export ``model_dir`` as ``exporter.name`` into a new version of ``repository``.

    Args:
        exporter: The model kind's exporter.
        model_dir: Hugging Face model folder.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one. An existing finished version is refused.
        precision: ``fp32``, or ``int8`` where the kind takes it.
        tolerance: Parity bound overriding the precision's default.
        write_model_config: Also (re)write ``<repository>/<name>/config.pbtxt``.
        provenance: Source fields for ``metadata.json`` when ``model_dir`` is an intermediate (a merged
            LoRA adapter); ``None`` describes ``model_dir`` itself.
        **serving: ``config.pbtxt`` settings, those named in ``SERVING_OPTIONS`` for this model (see
            :func:`tools.export.config.build_config`); absent or ``None`` for the defaults.

    Returns:
        The written version folder.

    Raises:
        ParityError: If the export disagrees with the checkpoint (nothing is left behind).
        FileExistsError: If ``version`` already holds an export.
        ValueError: A precision or setting the kind does not take, or a checkpoint it cannot export.
    """
    offline()
    started = time.perf_counter()
    name, model_dir, repository = exporter.name, Path(model_dir), Path(repository)
    policy = parity_policy(name, precision, tolerance)
    serving = check_serving(name, serving)
    target = resolve_target(repository, name, version)
    logger.info("exporting %s %s -> %s (%s)", name, model_dir, target, precision)
    exporter.load(model_dir)
    with staging(target) as folder:
        exported = exporter.write(ExportJob(model_dir=model_dir, staging=folder, precision=precision, policy=policy))
        exported.metadata["parity"]["precision"] = precision
        if exporter.tokenizer is not None:  # a kind whose inputs are not text has none
            exporter.tokenizer.save_pretrained(str(folder))
        copy_adapter(name, staging_dir=folder, target=target)
        metadata = build_metadata(
            name, int(target.name), model_dir, started=started, provenance=provenance, precision=precision,
            canary=canary(name, exported.canary_output, policy.tolerance, model_input=exported.canary_input),
            **exported.metadata,
        )
        write_json(folder / METADATA_FILE, metadata)
        if write_model_config:
            write_config(repository, name, **{**serving, **exported.config})
    logger.info("%s exported in %.1f s %s", name, time.perf_counter() - started, exported.summary)
    return target
