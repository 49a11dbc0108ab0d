"""Contracts between training, export and serving: model names, tensor names, labels, served defaults.

Every name or constant that two stages must agree on is defined here and only here (a unit test checks
that no other module defines them again). Changing one changes the wire contract with Triton or what the
models were trained on: re-export (and retrain where it says so).
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- Triton models and their tensors -------------------------------------------------------------------


@dataclass(frozen=True)
class TritonContract:
    """One served model: its Triton name and the names of its single input and output tensors."""

    model_name: str
    input_name: str
    output_name: str


TEXT_ENCODER = "text_encoder"
RANKER = "ranker"
PREFERENCE_GENERATOR = "preference_generator"
SEQUENCE_ENCODER = "sequence_encoder"
REQUEST_READER = "request_reader"
"""The token tagger that reads a request (``services/core/reading.py``); on the text encoder's family."""
MODEL_NAMES: tuple[str, ...] = (TEXT_ENCODER, RANKER, PREFERENCE_GENERATOR, REQUEST_READER)
"""The language models (exported from Hugging Face checkpoints, tuned with LoRA)."""
SERVED_MODELS: tuple[str, ...] = (*MODEL_NAMES, SEQUENCE_ENCODER)
"""Every model Triton serves."""

# Triton tensors (what services send and read).
TEXT_INPUT = "text"
PROMPT_INPUT = "prompt"
EMBEDDING_OUTPUT = "embedding"
CANDIDATE_SCORES_OUTPUT = "candidate_scores"
TEXT_OUTPUT = "text"
HISTORY_INPUT = "item_ids"
"""The sequence encoder's input: catalog item ids, oldest first (TYPE_STRING, variable length)."""
USER_VECTOR_OUTPUT = "user_vector"
WORD_LABEL_PROBS_OUTPUT = "word_label_probs"
"""The request reader's output: one row of role probabilities per word of the request ([W, roles])."""

TRITON_CONTRACTS: dict[str, TritonContract] = {
    TEXT_ENCODER: TritonContract(TEXT_ENCODER, TEXT_INPUT, EMBEDDING_OUTPUT),
    RANKER: TritonContract(RANKER, PROMPT_INPUT, CANDIDATE_SCORES_OUTPUT),
    PREFERENCE_GENERATOR: TritonContract(PREFERENCE_GENERATOR, PROMPT_INPUT, TEXT_OUTPUT),
    SEQUENCE_ENCODER: TritonContract(SEQUENCE_ENCODER, HISTORY_INPUT, USER_VECTOR_OUTPUT),
    REQUEST_READER: TritonContract(REQUEST_READER, TEXT_INPUT, WORD_LABEL_PROBS_OUTPUT),
}

# ONNX graph tensors (what the exports write and the python-backend adapters feed).
ONNX_INPUT_IDS = "input_ids"
ONNX_ATTENTION_MASK = "attention_mask"
ONNX_TOKEN_TYPE_IDS = "token_type_ids"
ONNX_EMBEDDING = "embedding"
ONNX_LABEL_LOGITS = "label_logits"
ONNX_ITEM_INDICES = "item_indices"
"""The sequence model's graph input: model item rows (1..N, 0 = padding), left-padded [B, L]."""
ONNX_USER_VECTOR = "user_vector"
ONNX_TOKEN_LOGITS = "token_label_logits"
"""The request reader's graph output: role logits of every token [B, T, roles]."""

# ---- The ranker's labels ---------------------------------------------------------------------------------

# LlamaRec-style listwise labels; each " X" is a single token in SmolLM2's tokenizer.
LABELS: tuple[str, ...] = tuple(chr(ord("A") + i) for i in range(20))
MAX_CANDIDATES = len(LABELS)

# Text the ranker's assistant turn starts with; the next token is the chosen label (retrain if changed).
RANKER_ANSWER_PREFIX = "Answer:"

# ---- Served defaults shared with training ----------------------------------------------------------------

RETRIEVAL_TEMPERATURE = 0.05
"""The text encoder's InfoNCE training temperature. Retrieval scores divided by it are on the scale of the
encoder's training logits (the ranking fusion), and it is the weight of the log-popularity prior that the
popularity-sampled in-batch negatives took out (the logQ correction)."""

# The served retrieval rule (services/core/index.user_vector and the popularity prior); the retrieval
# service's settings default to these, and training, fusion fitting and evaluation reproduce them.
RETRIEVAL_HISTORY_WEIGHT = 0.5
"""Weight of the mean of recent history item vectors against the encoded request text."""
RETRIEVAL_POPULARITY_WEIGHT = RETRIEVAL_TEMPERATURE
"""Weight of the log-popularity prior added to the cosine (the logQ correction: the training temperature)."""
RECENT_HISTORY_ITEMS = 10
"""Most recent history items in the request text, the history vector and the implicit preference."""
INTENT_MIN_CONFIDENCE = 0.5
"""An attribute counts as named by a query when its intent head's 1 - p(NONE) is at least this (the service's
setting defaults to it; the fusion fit reads queries the same way)."""
FUSE_RETRIEVAL_SCORES = True
"""Whether the gateway passes each candidate's retrieval score to the ranker to fuse with the LM's (caller-
supplied candidates are scored by the retrieval service first); the gateway's setting defaults to it, and the
bench uses it to know whether retrieval encodes a text for a request with candidates."""

# What a sequence_encoder version folder holds beside model.onnx (written by the export, read by the Triton
# adapter and by `instructrec build-index`).
SEQUENCE_ITEM_IDS_FILE = "item_ids.json"
"""Catalog id of model row 1, 2, ... (row 0 is padding)."""
SEQUENCE_ITEM_VECTORS_FILE = "item_vectors.npy"
"""The item side of the dot product, [rows, H] float32, row 0 padding."""
