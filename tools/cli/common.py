"""What the command groups share: options, the models choice, the console, logging and message helpers."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

WorkspaceOption = Annotated[Path, typer.Option(help="Git-ignored folder for data, base models and the index.")]
# Tools reach a given Triton with services.common.triton_clients.tool_triton_settings.
TRITON_TLS_HELP = (" TLS to Triton: INSTRUCTREC_TRITON__TLS__ENABLED=true, with INSTRUCTREC_TRITON__TLS__CA_PATH, "
                   "__CERT_PATH and __KEY_PATH (mutual TLS), __SERVER_NAME.")


class Models(StrEnum):
    """Which model versions the local stack serves."""

    tuned = "tuned"
    base = "base"


ModelsOption = Annotated[Models, typer.Option(
    help="tuned: export the committed instruction-tuned adapters (tools/train/adapters) and serve them; "
         "base: serve the zero-shot base models.")]
console = Console()


def setup_logging() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")



def invocation(command: str) -> str:
    """The command line as run (``command`` and this call's arguments, quoted), for the records it writes."""
    return " ".join([command, *map(shlex.quote, sys.argv[2:])])


def say(text: str) -> None:
    """Print without hard wrapping, so messages and paths stay whole for copying and grepping."""
    console.print(text, soft_wrap=True)


def figures(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(values.items())
                     if v is not None)


def error_text(exc: Exception) -> str:
    message = getattr(exc, "message", None)  # tritonclient errors keep the server's text there
    return ((message() if callable(message) else "") or str(exc)).splitlines()[0]



RepositoryOption = Annotated[Path, typer.Option(help="Triton model repository folder.")]
