"""The shared domain: what training, evaluation, export and serving must agree on, defined once.

Pure Python (numpy, faiss, and torch/transformers imported lazily inside functions): no grpc, tritonclient
or pydantic-settings here. ``services/*`` and ``tools/*`` import it; it imports nothing from them
(docs/architecture.md, checked by ``tests/unit/services/core/test_layers.py``).

- ``contracts``: Triton model and tensor names, the label set, served defaults (each defined once)
- ``catalog``: items, interactions, the item text rule
- ``prompts``: the instruction templates
- ``validation``: request limits shared by the services
- ``index``: the FAISS item index and the user-vector rule
- ``fusion``: how retrieval and LM scores combine
- ``modeltext``: the text a model reads and the torch modules the exports wrap (ranker scorer, pooled encoder)
- ``errors``: domain exceptions (``services/common/errors`` maps them to gRPC status codes)
"""
