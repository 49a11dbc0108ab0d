"""`instructrec train` and `fit-fusion` (``tools/train``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tools.cli.common import (
    Models,
    ModelsOption,
    WorkspaceOption,
    figures,
    invocation,
    say,
    setup_logging,
)


class TrainTarget(StrEnum):
    """A model to train, or all the LoRA-tuned ones in order."""

    text_encoder = "text_encoder"
    ranker = "ranker"
    preference_generator = "preference_generator"
    request_reader = "request_reader"
    sequential = "sequential"
    all = "all"


class Preset(StrEnum):
    default = "default"
    large = "large"


def train(
    model: Annotated[TrainTarget, typer.Argument(
        help="text_encoder (retriever, T2), ranker (T3/T0), preference_generator (P2), or all (in that order: "
             "the ranker's hard negatives then come from the tuned retriever).")],
    data_dir: Annotated[Path, typer.Option(help="Split written by `prepare` / `prepare-data`.")] = Path(
        "var/data/movielens-100k"),
    out_dir: Annotated[Path, typer.Option(help="Runs go to OUT_DIR/<model>: adapter/, checkpoint/, record.json.")
                       ] = Path("var/train"),
    preset: Annotated[Preset, typer.Option(
        help="default: all three in under an hour on 2 CPU cores; large: more steps, LoRA on every layer "
             "(for a GPU).")] = Preset.default,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1 ...")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the example stream, LoRA init and dropout.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Override the preset's number of steps.")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        help="Override the preset's wall-time limit per model (stops after a final validation; 0 = none).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue each run from OUT_DIR/<model>/checkpoint.")] = False,
    publish: Annotated[bool, typer.Option(
        help="Copy each best adapter with its record and a model card to tools/train/adapters/<model> "
             "(what `instructrec prepare` serves).")] = False,
    workspace: WorkspaceOption = Path("var"),
) -> None:
    """Instruction-tune the LMs with LoRA, or train the sequential model, on the training split (validation
    picks the checkpoint). `sequential` trains SASRec (the served `sequence_encoder`); `all` does not include it."""
    from tools.core.base_models import minilm_dir, smollm2_dir
    from tools.export import REQUEST_READER, TEXT_ENCODER
    from tools.train.common import ADAPTER_DIR
    from tools.train.run import TRAIN_ORDER, make_config, published_adapter, train_one
    from tools.train.run import publish as publish_adapter

    setup_logging()
    command = invocation("instructrec train")
    if model == TrainTarget.sequential:
        _train_sequential(data_dir, out_dir, seed=seed, epochs=steps, max_minutes=max_minutes or 0.0, resume=resume,
                          publish=publish, command=command)
        return
    names = TRAIN_ORDER if model == TrainTarget.all else (model.value,)
    for name in names:
        base = minilm_dir() if name in (TEXT_ENCODER, REQUEST_READER) else smollm2_dir(workspace)
        # The ranker's hard negatives: this run's tuned retriever, else the committed one, else the base.
        trained = out_dir / TEXT_ENCODER / ADAPTER_DIR
        encoder = (trained if (trained / "adapter_config.json").is_file()
                   else published_adapter(TEXT_ENCODER) or minilm_dir())
        config = make_config(name, preset.value, data_dir, out_dir, base, device, seed, steps, max_minutes, encoder)
        record = train_one(name, config, resume=resume)
        best = record.best or {}
        say(f"{name}: {record.status}; best at step {best.get('step')}: "
             + ", ".join(f"{k} {v}" for k, v in best.items() if k not in ("step", "elapsed_s")))
        if publish:
            say(f"published to {publish_adapter(name, config.out_dir, command)}")


def _train_sequential(data_dir: Path, out_dir: Path, *, seed: int, epochs: int | None, max_minutes: float,
                      resume: bool, publish: bool, command: str) -> None:
    from dataclasses import replace

    from services.core.contracts import SEQUENCE_ENCODER
    from tools.train import sequential

    config = replace(sequential.SequentialConfig(), seed=seed, **({"epochs": epochs} if epochs else {}))
    run_dir = out_dir / SEQUENCE_ENCODER
    record = sequential.run(data_dir, run_dir, config, resume=resume, max_minutes=max_minutes)
    best = record.get("best") or {}
    say(f"{SEQUENCE_ENCODER}: best epoch {record['best_epoch']} of {len(record['epochs'])}: validation HR@10 "
         f"{best.get('valid_HR@10', 0):.4f}, NDCG@10 {best.get('valid_NDCG@10', 0):.4f} ({record['seconds']} s)")
    if publish:
        say(f"published to {sequential.publish(run_dir, command)}")


class FusionStage(StrEnum):
    retrieval = "retrieval"
    ranking = "ranking"


def _fit_retrieval_fusion(models: Models, data_dir: Path, *, seed: int, write: bool) -> None:
    from tools.core.base_models import minilm_dir
    from tools.export import TEXT_ENCODER
    from tools.train import retrieval_fusion, sequential
    from tools.train.run import published_adapter

    encoder = published_adapter(TEXT_ENCODER) if models == Models.tuned else minilm_dir()
    if encoder is None or not sequential.is_sequence_checkpoint(sequential.PUBLISHED_DIR):
        raise typer.BadParameter("needs the committed text_encoder adapter and sequence_encoder "
                                 "in tools/train/adapters")
    record = retrieval_fusion.fit(retrieval_fusion.RetrievalFitConfig(data_dir, encoder, sequential.PUBLISHED_DIR,
                                                                      seed=seed))
    for situation, measured in record["reference"].items():
        say(f"{situation}: " + "; ".join(f"{k} NDCG@10 {v['NDCG@10']:.4f}" if "NDCG@10" in v else
                                          f"{k} {v['gain']:+.4f} (s.e. {v['gain_stderr']:.4f})"
                                          for k, v in measured.items()))
    say(f"weights: {record['fusion']}")
    if write:
        say(f"written to {retrieval_fusion.write(record, invocation('instructrec fit-fusion'))}")


def fit_fusion_cmd(
    models: ModelsOption = Models.tuned,
    data_dir: Annotated[Path, typer.Option(help="Split written by `prepare` / `prepare-data`.")] = Path(
        "var/data/movielens-100k"),
    validation_users: Annotated[int, typer.Option(help="Validation users (two candidate lists each).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the random negatives.")] = 0,
    write: Annotated[bool, typer.Option(
        help="Store the result as the MODELS entry of tools/train/adapters/fusion.json (what `instructrec run` "
             "serves as RANKING_LM_WEIGHT; copy a new tuned weight into RankingSettings.lm_weight's default).")
    ] = False,
    workspace: WorkspaceOption = Path("var"),
    stage: Annotated[FusionStage, typer.Option(
        help="retrieval: the retrieval service's source weights (sequence model, text, popularity, intent "
             "heads; with a query, without one, without the sequence model) on all validation users, written to "
             "tools/train/adapters/retrieval_fusion.json; "
             "ranking: the LM weight against the retrieval score.")] = FusionStage.ranking,
) -> None:
    """Fit the fusion weights of the retrieval or the ranking stage on validation users (no test items)."""
    from tools.core.base_models import minilm_dir, smollm2_dir
    from tools.export import RANKER, TEXT_ENCODER
    from tools.train.fusion import FusionFitConfig, fit_fusion, write_fusion
    from tools.train.run import published_adapter

    setup_logging()
    if stage == FusionStage.retrieval:
        _fit_retrieval_fusion(models, data_dir, seed=seed, write=write)
        return
    if models == Models.tuned:
        ranker, encoder = published_adapter(RANKER), published_adapter(TEXT_ENCODER)
        if ranker is None or encoder is None:
            raise typer.BadParameter("no committed ranker / text_encoder adapter in tools/train/adapters")
    else:
        ranker, encoder = smollm2_dir(workspace), minilm_dir()
    result = fit_fusion(FusionFitConfig(data_dir, ranker, encoder, validation_users, seed))
    result["command"] = invocation("instructrec fit-fusion")
    say(f"{models.value}: lm_weight {result['lm_weight']}; validation {figures(result['validation'])}; "
         f"LM only {figures(result['lm_only'])}; retrieval only {figures(result['retrieval_only'] or {})}")
    if write:
        say(f"written to {write_fusion(models.value, result)}")


def retrain_cmd(
    data_dir: Annotated[Path, typer.Option(
        help="A workspace made by `bootstrap` (its store, repository and index are used), or a data set folder "
             "with items.jsonl.")] = Path("var/data/movielens-100k"),
    store: Annotated[str | None, typer.Option(
        help="The gateways' interaction store (GATEWAY_INTERACTION_STORE): a SQLite file or a postgresql:// URL. "
             "Default: the workspace's, or var/interactions/<data set>.sqlite3.")] = None,
    repository: Annotated[Path | None, typer.Option(
        help="The model repository Triton serves (default: the workspace's, or model_repository).")] = None,
    sequence_index_dir: Annotated[Path | None, typer.Option(
        help="Where retrieval reads the sequence index (default: the workspace's, or "
             "var/index-sequence/<data set>).")] = None,
    triton: Annotated[list[str] | None, typer.Option(
        help="Triton gRPC host:port to push to (repeat for several); the first builds the index.")] = None,
    train_minutes: Annotated[float, typer.Option(min=1, help="Training time budget.")] = 30.0,
    tolerance: Annotated[float, typer.Option(
        min=0, help="Push when the new held-out NDCG@10 >= the served one minus this.")] = 0.0,
    out_dir: Annotated[Path | None, typer.Option(help="Run folder (default var/retrain/<data set>).")] = None,
    threads: Annotated[int, typer.Option(
        min=0, help="Training threads (0: every core; in a container set its CPU limit).")] = 0,
) -> None:
    """Train the sequence model on the interaction store (what users recorded, and the seed), compare it with the
    served version on each user's last item, and only if it is not worse export it, push it to every Triton and
    build its sequence index (no downtime: retrieval switches to the new pair once both are there)."""
    from tools.core.sequence_model import SequentialConfig
    from tools.core.workspace import DatasetWorkspace, is_workspace
    from tools.retrain import RetrainConfig, retrain

    setup_logging()
    if is_workspace(data_dir):
        ws = DatasetWorkspace.at(data_dir)
        catalog, defaults = ws.data_dir / "items.jsonl", (str(ws.interaction_store), ws.model_repository,
                                                         ws.sequence_index_dir)
    else:
        name = data_dir.name
        catalog, defaults = data_dir / "items.jsonl", (f"var/interactions/{name}.sqlite3", Path("model_repository"),
                                                       Path(f"var/index-sequence/{name}"))
    config = RetrainConfig(store or defaults[0], catalog, repository or defaults[1], triton or ["localhost:8001"],
                           sequence_index_dir or defaults[2], out_dir or Path("var/retrain") / data_dir.name,
                           train_minutes=train_minutes, tolerance=tolerance,
                           sequence=SequentialConfig(threads=threads))
    record = retrain(config)
    say(f"{record['decision']}: new {figures(record['new'])}; served version {record['served_version']} "
        f"{figures(record.get('served') or {})} ({record['users']} users)")


COMMANDS = {"train": train, "fit-fusion": fit_fusion_cmd, "retrain": retrain_cmd}
"""The group's commands by their name on the command line."""
