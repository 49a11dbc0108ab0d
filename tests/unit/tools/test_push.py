"""Push orchestration against fake Tritons, version pruning, canary checks, LoRA and int8 exports, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from tools import export
from tools.cli import app
from tools.core import base_models
from tools.export import canary, push
from tools.tiny_models import build_tiny_encoder, build_tiny_lm

ROOT = Path(__file__).resolve().parents[3]
EXPECTED = [0.5, -0.25, 1.0]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm", base_models.smollm2_tokenizer_dir(ROOT / "var"))


def _fake_version(repository: Path, version: int, name: str = "ranker") -> Path:
    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"weights")
    canary = {"input_name": "prompt", "input": "q", "output_name": "candidate_scores", "expected": EXPECTED,
              "tolerance": 1e-3}
    (folder / "metadata.json").write_text(json.dumps({"model": name, "version": version, "canary": canary}))
    return folder


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    for version in (1, 2, 3):
        _fake_version(tmp_path, version)
    export.write_config(tmp_path, "ranker")
    return tmp_path


class FakeTriton:
    """Records model-control calls; serves the highest version folder present at its last load."""

    def __init__(self, addr: str, repository: Path, *, output=None, fail_load: str = "", unreachable: bool = False,
                 fail_reload: bool = False) -> None:
        self.addr = addr
        self.repository = repository
        self.output = np.array([EXPECTED], dtype=np.float32) if output is None else output
        self.fail_load = fail_load
        self.unreachable = unreachable
        self.fail_reload = fail_reload
        self.loads: list[str] = []
        self.inferred: list[str] = []
        self.serving: list[str] = ["2"]

    def check(self) -> None:
        if self.unreachable:
            raise ConnectionError("failed to connect to all addresses")

    def load(self, name: str, timeout_s: float) -> None:
        self.loads.append(name)
        if self.fail_load or (self.fail_reload and len(self.loads) > 1):
            raise RuntimeError(self.fail_load or "connection reset")
        versions = [int(p.name) for p in (self.repository / name).iterdir() if p.name.isdigit()]
        self.serving = [str(max(versions))]

    def is_ready(self, name: str, version: str) -> bool:
        return version in self.serving

    def served_versions(self, name: str) -> list[str]:
        return list(self.serving)

    def infer_text(self, name, version, input_name, text, output_name, timeout_s):  # noqa: ANN001, ANN201
        self.inferred.append(version)
        return self.output

    def close(self) -> None:
        pass


def _connect(fakes: dict[str, FakeTriton]):  # noqa: ANN202
    return lambda addr: fakes[addr]


def _hidden(repository: Path, name: str = "ranker") -> list[str]:
    return [p.name for p in (repository / name).iterdir() if p.name.startswith(".")]


def test_push_loads_every_replica_checks_the_canary_then_prunes(repository: Path) -> None:
    fakes = {a: FakeTriton(a, repository) for a in ("a:8001", "b:8001")}

    report = push.push_version(repository, "ranker", 3, list(fakes), keep=2, connect=_connect(fakes))

    assert [t.serving for t in report.targets] == [["3"], ["3"]]
    assert all(f.loads == ["ranker"] and f.inferred == ["3"] for f in fakes.values())
    assert report.targets[0].canary["max_abs_diff"] == 0.0
    assert report.pruned == [1]
    assert sorted(p.name for p in (repository / "ranker").iterdir()) == ["2", "3", "config.pbtxt"]


def test_canary_failure_on_one_replica_rolls_back_every_replica(repository: Path) -> None:
    config = repository / "ranker" / "config.pbtxt"
    snapshot = push.ConfigSnapshot.take(repository, "ranker")
    export.write_config(repository, "ranker", max_prompt_tokens=8)  # what the failed export wrote
    fakes = {
        "a:8001": FakeTriton("a:8001", repository),
        "b:8001": FakeTriton("b:8001", repository, output=np.array([[np.nan, 0.0, 0.0]], dtype=np.float32)),
    }

    with pytest.raises(push.PushError) as err:
        push.push_version(repository, "ranker", 3, list(fakes), config_snapshot=snapshot, keep=1,
                          connect=_connect(fakes))

    message = str(err.value)
    assert "canary inference on b:8001" in message and "non-finite" in message
    assert "a:8001 serves version 2" in message and "b:8001 serves version 2" in message
    assert err.value.rolled_back
    assert not (repository / "ranker" / "3").exists() and _hidden(repository) == []
    assert config.read_text() == snapshot.text
    assert [f.loads for f in fakes.values()] == [["ranker", "ranker"], ["ranker", "ranker"]]
    assert [f.serving for f in fakes.values()] == [["2"], ["2"]]
    assert (repository / "ranker" / "1").is_dir()  # nothing pruned after a failure


def test_unreachable_replica_stops_the_push_before_any_load(repository: Path) -> None:
    fakes = {"a:8001": FakeTriton("a:8001", repository), "b:8001": FakeTriton("b:8001", repository, unreachable=True)}

    with pytest.raises(push.PushError, match="connection on b:8001: failed to connect"):
        push.push_version(repository, "ranker", 3, list(fakes), connect=_connect(fakes))

    assert fakes["a:8001"].loads == [] and not (repository / "ranker" / "3").exists()


def test_load_error_is_reported_and_a_failed_reload_marks_the_rollback_incomplete(repository: Path) -> None:
    fakes = {"a:8001": FakeTriton("a:8001", repository, fail_load="version 3 is at UNAVAILABLE state")}
    with pytest.raises(push.PushError, match="load_model on a:8001: version 3 is at UNAVAILABLE") as err:
        push.push_version(repository, "ranker", 3, list(fakes), connect=_connect(fakes))
    assert "ROLLBACK INCOMPLETE" in str(err.value) and not err.value.rolled_back

    _fake_version(repository, 3)
    fakes = {"a:8001": FakeTriton("a:8001", repository, output=np.zeros((1, 3), np.float32), fail_reload=True)}
    with pytest.raises(push.PushError, match="reload FAILED") as err:
        push.push_version(repository, "ranker", 3, list(fakes), connect=_connect(fakes))
    assert "differs from the export's" in str(err.value) and not err.value.rolled_back


def test_unfinished_version_is_never_pushed(repository: Path) -> None:
    (repository / "ranker" / "4").mkdir()
    with pytest.raises(push.PushError, match="no finished export"):
        push.push_version(repository, "ranker", 4, ["a:8001"], connect=lambda addr: pytest.fail("connected"))


ENCODED = [0.6, 0.8, 0.0]


@pytest.mark.parametrize(
    ("name", "expected", "output", "error"),
    [
        ("ranker", EXPECTED, np.array([EXPECTED], np.float32), None),
        ("ranker", EXPECTED, np.array([[0.5, -0.25, 1.0005]], np.float32), None),
        ("ranker", EXPECTED, np.array([[0.5, -0.25, 1.1]], np.float32), "differs from the export's by 0.1"),
        ("ranker", EXPECTED, np.array([[0.5, np.inf, 1.0]], np.float32), "non-finite"),
        ("ranker", EXPECTED, np.array([EXPECTED[:2]], np.float32), "shape [1, 2], expected [1, 3]"),
        ("ranker", EXPECTED, None, "no 'candidate_scores' output"),
        ("text_encoder", ENCODED, np.array([ENCODED], np.float32), None),
        # A version exported before canaries were recorded: no expected output, the norm is still checked.
        ("text_encoder", None, np.array([[0.6, 0.9, 0.0]], np.float32), "norm 1.08"),
        ("preference_generator", None, np.array([[b"Likes films."]], np.object_), None),
        ("preference_generator", None, np.array([[b"\xff\xfe"]], np.object_), "undecodable"),
        ("preference_generator", None, np.array([[b"a", b"b"]], np.object_), "shape [1, 2]"),
    ],
)
def test_canary_output_checks(name: str, expected: list[float] | None, output, error: str | None) -> None:  # noqa: ANN001
    spec = {"output_name": "candidate_scores", "expected": expected, "tolerance": 0.01}
    if error is None:
        canary.check_canary(name, spec, output)
    else:
        with pytest.raises(canary.CanaryError) as err:
            canary.check_canary(name, spec, output)
        assert error in str(err.value)


@pytest.mark.parametrize("value", ["localhost", "host:", ":8001", "host:http", "host:70000"])
def test_push_targets_must_be_host_port(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        push.parse_target(value)
    assert push.parse_target(" triton-0.triton:8001 ") == "triton-0.triton:8001"


def test_pruning_keeps_the_newest_and_the_committed_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export.versions, "COMMITTED_REPOSITORY", tmp_path)
    for version in (1, 2, 3, 4):
        _fake_version(tmp_path, version)
    (tmp_path / "ranker" / "1" / "model.py").write_text("# committed adapter\n")
    (tmp_path / "ranker" / "5").mkdir()  # an unfinished folder above the kept ones is not touched
    (tmp_path / "ranker" / "5" / "model.onnx").write_bytes(b"half")

    assert export.prune_versions(tmp_path, "ranker", keep=2) == [1, 2]

    assert sorted(p.name for p in (tmp_path / "ranker").iterdir()) == ["1", "3", "4", "5"]
    assert [p.name for p in (tmp_path / "ranker" / "1").iterdir()] == ["model.py"]
    assert export.next_version(tmp_path, "ranker") == 6
    with pytest.raises(ValueError):
        export.prune_versions(tmp_path, "ranker", keep=0)


@pytest.mark.parametrize("name", export.MODEL_NAMES)
def test_config_options_reproduce_the_config(name: str) -> None:
    config = export.build_config(name, max_batch_size=3, max_queue_delay_us=70, instance_count=2, num_threads=3,
                                 num_versions=2)
    assert export.build_config(name, **export.config_options(config)) == config


def test_serving_options_keep_the_repository_settings_unless_overridden(tmp_path: Path) -> None:
    export.write_config(tmp_path, "ranker", max_queue_delay_us=20_000, max_prompt_tokens=512)

    options = export.serving_options(tmp_path, "ranker", max_batch_size=4, num_threads=None)

    assert options["max_queue_delay_us"] == 20_000 and options["max_prompt_tokens"] == 512
    assert options["max_batch_size"] == 4 and options["num_threads"] == 2


def _lora_adapter(lm: Path, dest: Path, base_path: str) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(lm))
    # init_lora_weights=False: random B as well as A, so the merged weights differ from the base.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(dest))
    adapter_config = json.loads((dest / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = base_path
    (dest / "adapter_config.json").write_text(json.dumps(adapter_config))
    return dest


def test_lora_adapter_is_merged_into_its_base_before_export(tiny_lm: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    adapter = _lora_adapter(tiny_lm, tmp_path / "adapter", base_path=str(tiny_lm))
    assert export.is_lora_adapter(adapter) and not export.is_lora_adapter(tiny_lm)

    base_dir = export.export_model("ranker", tiny_lm, tmp_path / "repo")
    merged_dir = export.export_model("ranker", adapter, tmp_path / "repo")

    meta = json.loads((merged_dir / "metadata.json").read_text())
    assert meta["source_checkpoint"] == str(adapter.resolve())
    assert meta["source_weights_sha256"] == export.weights_sha256(adapter)
    assert meta["base_model"]["path"] == str(tiny_lm.resolve())
    assert meta["adapter"] == {"type": "lora", "merged": True, "r": 4, "lora_alpha": 8,
                               "target_modules": ["q_proj", "v_proj"]}
    assert meta["parity"]["max_abs_diff"] <= export.RANKER_PARITY_TOLERANCE
    feeds = {"input_ids": np.arange(1, 9, dtype=np.int64)[None], "attention_mask": np.ones((1, 8), np.int64)}
    scores = [ort.InferenceSession(str(d / "model.onnx")).run(None, feeds)[0] for d in (base_dir, merged_dir)]
    assert np.abs(scores[0] - scores[1]).max() > 1e-4  # the adapter changed the model

    hub_named = _lora_adapter(tiny_lm, tmp_path / "hub", base_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert export.resolve_adapter_base(hub_named, "ranker", base=tiny_lm) == tiny_lm
    with pytest.raises(FileNotFoundError):
        export.resolve_adapter_base(hub_named, "ranker", base=tmp_path / "missing")


def test_int8_export_is_quantised_and_reports_relaxed_parity(tiny_lm: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    fp32 = export.export_model("ranker", tiny_lm, tmp_path)
    int8 = export.export_model("ranker", tiny_lm, tmp_path, precision="int8")
    encoder = export.export_model("text_encoder", tiny_encoder, tmp_path, precision="int8")

    ops = {node.op_type for node in onnx.load(str(int8 / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert not (int8 / "model.fp32.onnx").exists()
    assert (int8 / "model.onnx").stat().st_size < (fp32 / "model.onnx").stat().st_size
    parity = json.loads((int8 / "metadata.json").read_text())["parity"]
    assert parity["precision"] == "int8" and parity["tolerance"] == export.RANKER_INT8_TOLERANCE
    assert parity["top1_agreement"] >= export.RANKER_INT8_MIN_TOP1_AGREEMENT
    assert parity["topk_overlap"] >= export.RANKER_INT8_MIN_TOPK_OVERLAP
    encoder_parity = json.loads((encoder / "metadata.json").read_text())["parity"]
    assert encoder_parity["min_cosine"] >= export.ENCODER_INT8_MIN_COSINE


def test_int8_is_refused_for_the_generator_before_anything_is_written(tiny_lm: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int8 applies to"):
        export.export_model("preference_generator", tiny_lm, tmp_path, precision="int8")
    with pytest.raises(ValueError, match="has no setting max_new_tokens"):
        export.export_model("ranker", tiny_lm, tmp_path, max_new_tokens=3)
    assert not (tmp_path / "preference_generator").exists() and not (tmp_path / "ranker").exists()


def test_failed_push_restores_the_config_the_export_changed(tiny_lm: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    export.export_ranker(tiny_lm, repository, 1, max_queue_delay_us=20_000)
    before = (repository / "ranker" / "config.pbtxt").read_text()
    bad = FakeTriton("a:8001", repository, fail_load="boom")

    with pytest.raises(push.PushError, match="load_model on a:8001: boom"):
        push.publish("ranker", tiny_lm, repository, ["a:8001"], max_prompt_tokens=64, connect=lambda a: bad)

    assert (repository / "ranker" / "config.pbtxt").read_text() == before
    assert sorted(p.name for p in (repository / "ranker").iterdir()) == ["1", "config.pbtxt"]

    version_dir, report = push.publish("ranker", tiny_lm, repository, [], max_prompt_tokens=64)
    assert report is None and version_dir.name == "2"
    config = export.read_config(repository / "ranker" / "config.pbtxt")
    assert config.parameters["max_prompt_tokens"].string_value == "64"
    assert config.dynamic_batching.max_queue_delay_microseconds == 20_000  # kept from the repository


def test_a_second_export_into_the_repository_is_refused_while_one_runs(tmp_path: Path) -> None:
    with export.repository_lock(tmp_path):
        with pytest.raises(RuntimeError, match="in progress"):
            with export.repository_lock(tmp_path):
                pass
    with export.repository_lock(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


def test_cli_export_refuses_a_diverged_checkpoint_and_lists_the_repository(tiny_encoder: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    diverged = tmp_path / "diverged"
    shutil.copytree(tiny_encoder, diverged)
    weights = load_file(str(diverged / "model.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              str(diverged / "model.safetensors"), metadata={"format": "pt"})
    repository = tmp_path / "repo"
    runner = CliRunner()

    ok = runner.invoke(app, ["export", "text_encoder", "--checkpoint", str(tiny_encoder), "--repository",
                             str(repository), "--max-batch-size", "16"])
    refused = runner.invoke(app, ["export", "text_encoder", "--checkpoint", str(diverged), "--repository",
                                  str(repository)])
    listed = runner.invoke(app, ["models", "--repository", str(repository), "--triton", "127.0.0.1:9", "--json"])

    assert ok.exit_code == 0, ok.output
    assert "exported text_encoder version 1" in ok.output and "not pushed" in ok.output
    assert refused.exit_code == 2
    assert "parity check failed" in refused.output and "Nothing was written" in refused.output
    # The first export's version, config and warmup request; nothing of the refused one.
    assert sorted(p.name for p in (repository / "text_encoder").iterdir()) == ["1", "config.pbtxt", "warmup"]
    assert export.read_config(repository / "text_encoder" / "config.pbtxt").max_batch_size == 16
    listing = json.loads(listed.stdout)
    assert listing["triton"]["127.0.0.1:9"].startswith("unreachable")
    assert [(r["model"], r["version"], r["state"]) for r in listing["repository"]] == [("text_encoder", 1, "exported")]


def test_prepare_does_not_reexport_a_version_1_that_pruning_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_models, "minilm_dir", lambda: pytest.fail("re-exported"))
    monkeypatch.setattr(base_models, "smollm2_dir", lambda workspace=None: pytest.fail("re-exported"))
    for name in export.MODEL_NAMES:
        _fake_version(tmp_path, 2, name)
        (tmp_path / name / "1").mkdir()
        (tmp_path / name / "1" / "model.py").write_text("# adapter\n")
        export.write_config(tmp_path, name)

    assert export.ensure_default_repository(tmp_path, tmp_path / "var") == {n: 2 for n in export.MODEL_NAMES}
