"""The instruction service's batch job: write every known user's preference statement ahead of requests.

Run as ``instructrec precompute-preferences`` (locally; ``instructrec run`` starts it in the background once
the stack serves) or ``python -m services.instruction.precompute`` (the Kubernetes CronJob, in the instruction
service's image, with its settings from the same ``INSTRUCTION_*`` environment).

Each known user's recent history (the interaction store the gateway serves, cut exactly as the instruction
service cuts it: :func:`services.instruction.preferences.preference_request`) is sent to the served
``preference_generator`` as many concurrent single requests, so Triton's dynamic batcher forms the batches,
and the statements are written into the preference store under (history key, generator version). A run
skips the histories already stored for the served version, so an interrupted run resumes where it stopped
and a rerun after a new generator version (or grown histories) writes only what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from services.common.errors import ServiceError
from services.common.triton import TritonModel
from services.common.triton_clients import tool_triton_settings
from services.core.catalog import Catalog, InteractionStore
from services.core.contracts import PROMPT_INPUT, TEXT_OUTPUT
from services.instruction.preferences import PreferenceRequest, preference_request
from services.instruction.service import generator_fn, served_generator_version, statement_finisher
from services.instruction.settings import InstructionSettings
from services.instruction.store import PreferenceStore, Snapshot, StatementRow

log = logging.getLogger(__name__)


class PrecomputeError(RuntimeError):
    """The generator is not served, or the store cannot be written."""


@dataclass
class PrecomputeReport:
    """What a run did."""

    generator_version: str
    users: int  # known users with at least one catalog item in their history
    histories: int  # distinct recent histories among them (users can share one)
    already_stored: int
    written: int = 0
    unservable: int = 0  # written empty: nothing servable came out (served as implicit preference)
    failed: int = 0
    seconds: float = 0.0
    store: str = ""

    @property
    def per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "statements_per_second": round(self.per_second, 3)}


def known_histories(catalog: Catalog, store: InteractionStore, *, max_items: int, noun: str,
                    max_users: int | None = None) -> tuple[int, dict[str, PreferenceRequest]]:
    """The generator request of every known user's recent history, by key (users sharing a history share it).

    The history is what the gateway resolves (the stored ids that are in the catalog, oldest first).
    """
    users = sorted(store.histories, key=lambda u: (not u.isdigit(), int(u) if u.isdigit() else 0, u))
    if max_users is not None:
        users = users[:max_users]
    requests: dict[str, PreferenceRequest] = {}
    counted = 0
    for user in users:
        history = [catalog[i] for i in store.histories[user] if i in catalog]
        if not history:
            continue
        counted += 1
        request = preference_request(history, max_items=max_items, noun=noun)
        requests.setdefault(request.key, request)
    return counted, requests


async def precompute_preferences(
    *,
    triton_addr: str,
    interactions_path: Path,
    settings: InstructionSettings | None = None,
    store_path: Path | None = None,
    concurrency: int = 8,
    max_users: int | None = None,
    flush_every: int = 16,
    progress: bool = True,
    snapshot: bool = False,
) -> PrecomputeReport:
    """Fill the store with the served generator's statements of every known user's recent history.

    Args:
        triton_addr: Triton gRPC host:port (TLS from ``INSTRUCTREC_TRITON__*``).
        interactions_path: The interaction store the gateway serves (its ``GATEWAY_INTERACTIONS_PATH``).
        settings: The instruction service's settings (catalog, history cut, item noun, store path); default
            from the environment, so the keys match what the service reads.
        store_path: Overrides the settings' ``preference_store_path``.
        concurrency: Generations in flight (Triton batches them).
        max_users: Only the first N users (by id), e.g. for a quick check.
        flush_every: Statements per store transaction.
        progress: Show a progress bar.
        snapshot: Write a copy of the store and rename it over the old one at the end (the Kubernetes CronJob:
            replicas read the file read-only and immutable, and reopen it when it is replaced).
    """
    s = settings or InstructionSettings()
    path = store_path or s.preference_store_path
    if path is None:
        raise PrecomputeError("no preference store: set INSTRUCTION_PREFERENCE_STORE_PATH or --store")
    catalog = Catalog.load(s.catalog_path)
    users, requests = known_histories(catalog, InteractionStore.load(interactions_path),
                                      max_items=s.recent_history_items, noun=s.item_noun, max_users=max_users)
    model = TritonModel(tool_triton_settings(triton_addr), s.model_name, PROMPT_INPUT, TEXT_OUTPUT)
    copy = Snapshot(path) if snapshot else None
    store = copy.store if copy is not None else PreferenceStore(path)
    try:
        version = await served_generator_version(model)
        if not version:
            raise PrecomputeError(f"Triton at {triton_addr} serves no version of {s.model_name}")
        stored = store.keys(version)
        todo = [r for key, r in requests.items() if key not in stored]
        report = PrecomputeReport(version, users, len(requests), len(requests) - len(todo), store=str(path))
        log.info("precomputing %d of %d histories with %s version %s into %s", len(todo), len(requests),
                 s.model_name, version, path)
        await _generate_all(model, store, todo, statement_finisher(catalog), report, s.triton.timeout_s,
                            concurrency=concurrency, flush_every=flush_every, progress=progress)
        return report
    finally:
        await model.close()
        if copy is not None:
            copy.publish()  # what was written is valid even if the run stopped early
        else:
            store.close()


async def _generate_all(model: TritonModel, store: PreferenceStore, todo: list[PreferenceRequest], finish,
                        report: PrecomputeReport, timeout_s: float, *, concurrency: int, flush_every: int,
                        progress: bool) -> None:
    generate = generator_fn(model)
    queue: asyncio.Queue[PreferenceRequest] = asyncio.Queue()
    for request in todo:
        queue.put_nowait(request)
    buffer: list[StatementRow] = []
    bar = tqdm(total=len(todo), desc="preference statements", unit="history", disable=not progress)
    t0 = time.perf_counter()

    def flush() -> None:
        report.written += store.put_many(buffer)
        buffer.clear()

    async def worker() -> None:
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                raw, version = await generate(request.prompt, timeout_s)
            except ServiceError as exc:
                report.failed += 1
                log.warning("generation failed", extra={"error": str(exc)})
            else:
                statement = finish(raw)
                report.unservable += not statement
                buffer.append(StatementRow(request.item_ids, version, statement))
                if len(buffer) >= flush_every:
                    flush()
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        flush()  # an interrupted run keeps what it wrote
        bar.close()
        report.seconds = time.perf_counter() - t0


def summary(report: PrecomputeReport) -> str:
    """One line for people and logs."""
    return (f"{report.written} statements written ({report.unservable} empty, {report.failed} failed, "
            f"{report.already_stored} already stored) for {report.users} users / {report.histories} histories, "
            f"generator v{report.generator_version}, in {report.seconds:.1f} s ({report.per_second:.2f}/s) "
            f"-> {report.store}")


def main(argv: list[str] | None = None) -> int:
    """``python -m services.instruction.precompute --triton HOST:PORT --interactions train.csv [--report out.json]``"""
    from services.common.log import configure_logging

    parser = argparse.ArgumentParser(prog="python -m services.instruction.precompute", description=__doc__)
    parser.add_argument("--triton", default="localhost:8001", help="Triton gRPC host:port")
    parser.add_argument("--interactions", type=Path, required=True, help="the interaction store the gateway serves")
    parser.add_argument("--catalog", type=Path, default=None, help="default: INSTRUCTION_CATALOG_PATH")
    parser.add_argument("--store", type=Path, default=None, help="default: INSTRUCTION_PREFERENCE_STORE_PATH")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--report", type=Path, default=None, help="write the run's figures as JSON here")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--snapshot", action="store_true",
                        help="write a copy and rename it over the store at the end (read-only replicas)")
    args = parser.parse_args(argv)
    settings = InstructionSettings(**({"catalog_path": args.catalog} if args.catalog else {}))
    configure_logging("precompute", settings.log_level, settings.log_format)
    try:
        report = asyncio.run(precompute_preferences(
            triton_addr=args.triton, interactions_path=args.interactions, settings=settings, store_path=args.store,
            concurrency=args.concurrency, max_users=args.max_users, progress=args.progress,
            snapshot=args.snapshot))
    except PrecomputeError as exc:
        log.error("precompute failed: %s", exc)
        return 1
    log.info(summary(report))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return 1 if report.failed and not report.written else 0


if __name__ == "__main__":
    sys.exit(main())
