"""Export details: version folders, atomicity, parity refusal, label tokens and config.pbtxt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from services.core import prompts
from tools import base_models, export
from tools.tiny_models import build_tiny_encoder, build_tiny_lm

ROOT = Path(__file__).resolve().parents[2]


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
        assert {"model.onnx", "model.py", "metadata.json", "tokenizer.json"} <= {p.name for p in version_dir.iterdir()}
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
    original = export._export_onnx

    def corrupted_export(module, args, path, *rest, **kwargs):  # noqa: ANN001, ANN202
        original(module, args, path, *rest, **kwargs)
        model = onnx.load(str(path))
        largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        weights = numpy_helper.to_array(largest)
        rng = np.random.default_rng(0)
        largest.CopyFrom(numpy_helper.from_array(rng.normal(size=weights.shape).astype(weights.dtype), largest.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(export, "_export_onnx", corrupted_export)
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


@pytest.mark.parametrize("name", export.MODEL_NAMES)
def test_config_round_trips_through_pbtxt(name: str, tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    path = export.write_config(tmp_path, name, max_batch_size=4, max_queue_delay_us=300, instance_count=2)
    config = export.read_config(path)

    assert config == export.build_config(name, max_batch_size=4, max_queue_delay_us=300, instance_count=2)
    assert (config.name, config.backend, config.max_batch_size) == (name, "python", 4)
    assert config.dynamic_batching.max_queue_delay_microseconds == 300
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    assert config.version_policy.latest.num_versions == 1
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


def test_ensure_default_repository_exports_once(
    tiny_encoder: Path, tiny_lm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_models, "minilm_dir", lambda: tiny_encoder)
    monkeypatch.setattr(base_models, "smollm2_dir", lambda workspace=None: tiny_lm)
    for name in export.MODEL_NAMES:  # as in the committed repository: adapters and configs, no weights
        (tmp_path / name / "1").mkdir(parents=True)
        shutil.copy2(ROOT / "model_repository" / name / "1" / "model.py", tmp_path / name / "1" / "model.py")
        export.write_config(tmp_path, name, max_batch_size=3)

    assert export.ensure_default_repository(tmp_path, tmp_path / "var") == {n: 1 for n in export.MODEL_NAMES}
    stamps = {n: (tmp_path / n / "1" / "metadata.json").stat().st_mtime_ns for n in export.MODEL_NAMES}
    assert export.ensure_default_repository(tmp_path, tmp_path / "var") == {n: 1 for n in export.MODEL_NAMES}

    for name in export.MODEL_NAMES:
        assert (tmp_path / name / "1" / "metadata.json").stat().st_mtime_ns == stamps[name]
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
