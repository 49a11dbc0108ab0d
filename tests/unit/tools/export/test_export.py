"""Export details: version folders, atomicity, parity refusal, label tokens, config.pbtxt, the adapters' helper."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from services.core import prompts
from services.core.contracts import MODEL_NAMES, REQUEST_READER, SERVED_MODELS, TRITON_CONTRACTS
from tools import export
from tools.core import base_models
from tools.export import onnx as onnx_export
from tools.export import pipeline
from tools.export.config import WARMUP_DIR, WARMUP_FILE, WARMUP_MODELS, WARMUP_TEXT
from tools.tiny_models import build_tiny_encoder, build_tiny_lm, build_tiny_reader

ROOT = Path(__file__).resolve().parents[4]
HELPER = ROOT / "model_repository" / "triton_adapter.py"


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(
        tmp_path_factory.mktemp("tiny") / "lm", base_models.smollm2_tokenizer_dir(ROOT / "var")
    )


def _hidden_entries(model_dir: Path) -> list[str]:
    return [p.name for p in model_dir.iterdir() if p.name.startswith(".")]


def test_exports_go_to_new_versions_and_never_overwrite(tiny_encoder: Path, tmp_path: Path) -> None:
    first = export.export_text_encoder(tiny_encoder, tmp_path)
    second = export.export_text_encoder(tiny_encoder, tmp_path)

    assert (first.name, second.name) == ("1", "2")
    for version_dir in (first, second):
        assert {"model.onnx", "model.py", "triton_adapter.py", "metadata.json", "tokenizer.json"} <= {
            p.name for p in version_dir.iterdir()}
        assert (version_dir / "triton_adapter.py").read_text() == HELPER.read_text()
    assert _hidden_entries(tmp_path / "text_encoder") == []
    assert export.latest_version(tmp_path, "text_encoder") == 2
    assert export.next_version(tmp_path, "text_encoder") == 3
    with pytest.raises(FileExistsError):
        export.export_text_encoder(tiny_encoder, tmp_path, 1)


def test_export_fills_a_placeholder_version_and_keeps_its_adapter(tiny_encoder: Path, tmp_path: Path) -> None:
    placeholder = tmp_path / "text_encoder" / "1"
    placeholder.mkdir(parents=True)
    (placeholder / "model.py").write_text("# adapter\n")

    assert export.next_version(tmp_path, "text_encoder") == 1
    written = export.export_text_encoder(tiny_encoder, tmp_path)

    assert written == placeholder
    assert export.has_weights(placeholder)
    committed = ROOT / "model_repository" / "text_encoder" / "1" / "model.py"
    assert (placeholder / "model.py").read_text() == committed.read_text()


def test_metadata_records_provenance_and_parity(tiny_encoder: Path, tiny_lm: Path, tmp_path: Path) -> None:
    encoder_dir = export.export_text_encoder(tiny_encoder, tmp_path)
    ranker_dir = export.export_ranker(tiny_lm, tmp_path)

    meta = json.loads((ranker_dir / "metadata.json").read_text())
    assert meta["source_checkpoint"] == str(tiny_lm.resolve())
    assert meta["source_weights_sha256"] == export.weights_sha256(tiny_lm)
    assert meta["parity"]["max_abs_diff"] <= export.RANKER_PARITY_TOLERANCE
    assert meta["parity"]["argmax_agreement"] == 1.0
    assert meta["answer_prefix"] == prompts.RANKER_ANSWER_PREFIX
    assert meta["labels"] == [prompts.label_token_text(label) for label in prompts.LABELS]
    assert json.loads((encoder_dir / "metadata.json").read_text())["embedding_dim"] == 32

    session = ort.InferenceSession(str(ranker_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    (scores,) = session.run(
        ["label_logits"], {"input_ids": np.ones((3, 7), np.int64), "attention_mask": np.ones((3, 7), np.int64)}
    )
    assert scores.shape == (3, len(prompts.LABELS))


def test_export_with_wrong_outputs_is_refused_and_leaves_nothing(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = onnx_export.export_onnx

    def corrupted_export(module, args, path, *rest, **kwargs):  # noqa: ANN001, ANN202
        original(module, args, path, *rest, **kwargs)
        model = onnx.load(str(path))
        largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        weights = numpy_helper.to_array(largest)
        rng = np.random.default_rng(0)
        largest.CopyFrom(numpy_helper.from_array(rng.normal(size=weights.shape).astype(weights.dtype), largest.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(onnx_export, "export_onnx", corrupted_export)
    with pytest.raises(export.ParityError):
        export.export_text_encoder(tiny_encoder, tmp_path)

    assert list((tmp_path / "text_encoder").iterdir()) == []
    assert not (tmp_path / "text_encoder" / "config.pbtxt").exists()


def test_labels_must_be_single_tokens() -> None:
    class TwoTokens:
        def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
            return {"input_ids": [1, ord(text[-1])]}

    with pytest.raises(ValueError, match="exactly 1"):
        export.label_token_ids(TwoTokens())


@pytest.mark.parametrize("name", SERVED_MODELS)
def test_config_round_trips_through_pbtxt(name: str, tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    path = export.write_config(tmp_path, name, max_batch_size=4, max_queue_delay_us=300, instance_count=2)
    config = export.read_config(path)

    assert config == export.build_config(name, max_batch_size=4, max_queue_delay_us=300, instance_count=2)
    assert (config.name, config.backend, config.max_batch_size) == (name, "python", 4)
    assert config.dynamic_batching.max_queue_delay_microseconds == 300
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    # The encoders keep the previous version loaded after a push (the retrieval service asks for the version
    # its index was built with until the new index is loaded); the LMs serve one.
    assert config.version_policy.latest.num_versions == (2 if name in ("text_encoder", "sequence_encoder") else 1)
    assert [i.data_type for i in config.input] == [mc.TYPE_STRING]
    assert "EXECUTION_ENV_PATH" not in config.parameters
    if name == "ranker":
        assert config.parameters["answer_prefix"].string_value == prompts.RANKER_ANSWER_PREFIX
        assert list(config.output[0].dims) == [len(prompts.LABELS)]
    if name == "text_encoder":
        assert list(config.output[0].dims) == [export.DEFAULT_EMBEDDING_DIM]


@pytest.mark.parametrize("name", export.MODEL_NAMES)
def test_committed_configs_are_what_write_config_generates(name: str, tmp_path: Path) -> None:
    generated = export.write_config(tmp_path, name).read_text()
    assert (ROOT / "model_repository" / name / "config.pbtxt").read_text() == generated
    warmup = Path(name) / WARMUP_DIR / WARMUP_FILE
    committed = ROOT / "model_repository" / warmup
    assert committed.is_file() == (name in WARMUP_MODELS)
    if committed.is_file():
        assert committed.read_bytes() == (tmp_path / warmup).read_bytes()


def test_the_reader_and_the_encoder_are_warmed_up_with_a_typical_request(tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    for name in export.MODEL_NAMES:
        config = export.read_config(export.write_config(tmp_path, name))
        if name not in WARMUP_MODELS:
            assert not config.model_warmup
            continue
        (sample,) = config.model_warmup
        tensor = sample.inputs[config.input[0].name]
        assert (sample.batch_size, tensor.data_type, list(tensor.dims)) == (1, mc.TYPE_STRING, [1])
        data = (tmp_path / name / WARMUP_DIR / tensor.input_data_file).read_bytes()
        # Triton's layout of one string element: its 4-byte little-endian length, then the bytes.
        assert int.from_bytes(data[:4], "little") == len(data) - 4
        assert data[4:].decode() == WARMUP_TEXT


def test_ensure_default_repository_exports_once(
    tiny_encoder: Path, tiny_lm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_models, "minilm_dir", lambda: tiny_encoder)
    monkeypatch.setattr(base_models, "smollm2_dir", lambda workspace=None: tiny_lm)
    # The committed reader adapter is for the real MiniLM: a tiny reader stands in for it beside the tiny encoder.
    published = tmp_path / "published"
    build_tiny_reader(published / REQUEST_READER)
    monkeypatch.setattr(pipeline, "PUBLISHED_ADAPTERS", published)
    for name in export.MODEL_NAMES:  # as in the committed repository: adapters and configs, no weights
        (tmp_path / name / "1").mkdir(parents=True)
        shutil.copy2(ROOT / "model_repository" / name / "1" / "model.py", tmp_path / name / "1" / "model.py")
        export.write_config(tmp_path, name, max_batch_size=3)

    assert export.ensure_default_repository(tmp_path, tmp_path / "var") == {n: 1 for n in export.MODEL_NAMES}
    stamps = {n: (tmp_path / n / "1" / "metadata.json").stat().st_mtime_ns for n in export.MODEL_NAMES}
    assert export.ensure_default_repository(tmp_path, tmp_path / "var") == {n: 1 for n in export.MODEL_NAMES}

    for name in export.MODEL_NAMES:
        assert (tmp_path / name / "1" / "metadata.json").stat().st_mtime_ns == stamps[name]
        assert (tmp_path / name / "1" / "triton_adapter.py").is_file()
        assert export.read_config(tmp_path / name / "config.pbtxt").max_batch_size == 3  # kept, not rewritten


def test_queue_policy_bounds_the_queue_and_honours_request_timeouts():
    from tritonclient.grpc import model_config_pb2 as mc

    from tools.export import build_config, config_options

    config = build_config("ranker", max_queue_size=7)
    policy = config.dynamic_batching.default_queue_policy
    assert policy.max_queue_size == 7 and policy.allow_timeout_override
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert config_options(config)["max_queue_size"] == 7
    assert build_config("text_encoder").dynamic_batching.default_queue_policy.max_queue_size == 512


def test_the_committed_folder_gets_the_current_adapter_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export.versions, "COMMITTED_REPOSITORY", tmp_path)
    (tmp_path / "triton_adapter.py").write_text("# helper v2\n")
    folder = tmp_path / "ranker" / "1"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text("# committed adapter\n")
    (folder / "triton_adapter.py").write_text("# helper v1\n")

    assert not export.versions.refresh_adapter_helper(tmp_path, "ranker")  # no finished export: left alone
    (folder / "metadata.json").write_text("{}")
    assert export.versions.refresh_adapter_helper(tmp_path, "ranker")
    assert (folder / "triton_adapter.py").read_text() == "# helper v2\n"
    assert not export.versions.refresh_adapter_helper(tmp_path, "ranker")


class _FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _FakeResponse:
    def __init__(self, output_tensors: list | None = None, error: object = None) -> None:
        self.output_tensors, self.error = output_tensors or [], error


class _FakeError:
    INVALID_ARG = "INVALID_ARG"

    def __init__(self, message: str, code: str) -> None:
        self.message, self.code = message, code


@pytest.fixture
def triton_adapter(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``model_repository/triton_adapter.py`` imported against a stand-in for Triton's ``pb_utils``."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _FakeTensor
    fake.InferenceResponse = _FakeResponse
    fake.TritonError = _FakeError
    fake.get_input_tensor_by_name = lambda request, name: request.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("triton_adapter", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_adapter_helper_reads_tensor_names_from_the_config_and_answers_each_request(
    triton_adapter: types.ModuleType, name: str, tmp_path: Path
) -> None:
    contract = TRITON_CONTRACTS[name]
    from google.protobuf import json_format

    config = export.build_config(name, num_threads=3)

    batches = []

    class Upper(triton_adapter.BatchedModel):
        def load(self, args: dict) -> None:
            self.limit = int(self.parameter("num_threads", "99"))

        def prepare(self, texts: list[str]) -> list:
            if any(len(t) > self.limit for t in texts):
                raise ValueError("too long")
            return texts

        def run(self, rows: list) -> np.ndarray:
            batches.append(list(rows))
            return np.array([[t.upper().encode()] for t in rows], dtype=np.object_)

    model = Upper()
    model_config = json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))
    model.initialize({"model_config": model_config, "model_repository": str(tmp_path), "model_version": "1"})

    def request(*texts: bytes) -> dict:
        return {contract.input_name: _FakeTensor(contract.input_name, np.array([[t] for t in texts], np.object_))}

    requests = [request(b"ab"), request(b" "), request(b"c", b"de"), {}, request(b"\xff"), request(b"long one")]
    responses = model.execute(requests)

    assert batches == [["ab", "c", "de"]]  # one run over the good requests' rows
    assert [r.output_tensors[0].name for r in responses if r.error is None] == [contract.output_name] * 2
    assert [r.output_tensors[0].array.tolist() for r in responses if r.error is None] == [[[b"AB"]], [[b"C"], [b"DE"]]]
    errors = [r.error.message if r.error else None for r in responses]
    assert errors[0] is None and errors[2] is None
    assert errors[1] == f"bad {contract.input_name} input: {contract.input_name} must not be empty"
    assert errors[3].startswith(f"bad {contract.input_name} input:")
    assert "utf-8" in errors[4] and errors[5] == "too long"
    assert {r.error.code for r in responses if r.error} == {"INVALID_ARG"}
