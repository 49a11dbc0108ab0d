"""One exporter per model kind, on the shared core of :mod:`tools.export.exporters.base`.

``EXPORTERS`` is the table :func:`tools.export.pipeline.export_model` dispatches on; a new model kind is a
module here with its ``export_<kind>`` function, and a line in the table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.core.contracts import PREFERENCE_GENERATOR, RANKER, REQUEST_READER, SEQUENCE_ENCODER, TEXT_ENCODER
from tools.export.exporters.preference_generator import export_preference_generator
from tools.export.exporters.ranker import export_ranker
from tools.export.exporters.request_reader import export_request_reader
from tools.export.exporters.sequence_encoder import export_sequence_encoder
from tools.export.exporters.text_encoder import export_text_encoder

EXPORTERS: dict[str, Callable[..., Path]] = {
    TEXT_ENCODER: export_text_encoder,
    RANKER: export_ranker,
    PREFERENCE_GENERATOR: export_preference_generator,
    SEQUENCE_ENCODER: export_sequence_encoder,
    REQUEST_READER: export_request_reader,
}

__all__ = ["EXPORTERS", "export_preference_generator", "export_ranker", "export_request_reader",
           "export_sequence_encoder", "export_text_encoder"]
