"""`instructrec bench-scale`: how the served stack's cost grows with the catalog and the user base (issue #31).

For each size: a synthetic shop (``tools/synthetic.py``: categorical, multi-valued and numeric attributes,
skewed popularity and history lengths) goes through the real pipeline, ``instructrec bootstrap`` (split,
SASRec for a few minutes with sampled negatives on large catalogs: this measures cost, not quality; the
workspace's Triton repository; both indexes, HNSW from 100,000 items on; fitted weights; an evaluation on a
few hundred users), then ``instructrec run --data-dir <workspace>`` serves it and ``tools/bench/scale_probe.py``
measures it. MovieLens-100K (``instructrec run``) is measured in the same run as the baseline.

Workspaces are kept under ``--work-dir`` and a bootstrap resumes, so a size cut short (a session's end) goes
on where it stopped; ``--reuse`` measures existing workspaces without rebuilding them. The report (JSON, a
Markdown table, a plot) goes to ``--out`` with the machine's CPU flags.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from services.common.settings import ROOT
from tools.core.machine import machine

log = logging.getLogger("instructrec.bench.scale")

CONCURRENCY = (1, 8)
SAMPLED_SOFTMAX_FROM = 20_000
"""From this many items on the sequence model trains with sampled negatives (full logits would not fit)."""


@dataclass(frozen=True)
class Size:
    items: int
    users: int
    mean_history: float = 8.0

    @property
    def name(self) -> str:
        return f"shop-{self.items}-{self.users}"


DEFAULT_SIZES = (Size(10_000, 100_000), Size(100_000, 300_000), Size(1_000_000, 1_000_000))


@dataclass(frozen=True)
class ScaleConfig:
    sizes: tuple[Size, ...] = DEFAULT_SIZES
    work_dir: Path = ROOT / "var" / "scale"
    out: Path = ROOT / "docs" / "performance" / "scale"
    requests: int = 100
    """Measured requests per kind and concurrency (after warm-up)."""
    train_minutes: float = 5.0
    negatives: int = 2_048
    ready_timeout_s: float = 900.0
    reuse: bool = False
    baseline: bool = True


def parse_sizes(text: str) -> tuple[Size, ...]:
    """``"10000:100000,100000:300000"`` (items:users) -> sizes."""
    sizes = []
    for part in text.split(","):
        items, _, users = part.strip().partition(":")
        sizes.append(Size(int(items), int(users or items)))
    return tuple(sizes)


def prepare(size: Size, config: ScaleConfig) -> tuple[Path, dict]:
    """The size's synthetic data and its bootstrapped workspace (resumed or reused); its steps' seconds."""
    from tools.bootstrap import BootstrapConfig, bootstrap
    from tools.core.sequence_model import SequentialConfig
    from tools.synthetic import ShopSpec, write_shop

    root = config.work_dir / size.name
    source = root / "input"
    if not (source / "interactions.csv").is_file():
        started = time.perf_counter()
        counts = write_shop(source, ShopSpec(items=size.items, users=size.users, mean_history=size.mean_history))
        log.info("%s: synthesized %s in %.0f s", size.name, counts, time.perf_counter() - started)
    ws = root / "workspace"
    negatives = config.negatives if size.items >= SAMPLED_SOFTMAX_FROM else 0
    manifest_path = ws / "workspace.json"
    if not (config.reuse and manifest_path.is_file()):
        bootstrap(BootstrapConfig(catalog=source / "items.jsonl", interactions=source / "interactions.csv",
                                  synonyms=source / "synonyms.json", root=ws, train_minutes=config.train_minutes,
                                  sequence=replace(SequentialConfig(), negatives=negatives), sequence_runs=1,
                                  validation_users=300, evaluation_users=300))
    manifest = json.loads(manifest_path.read_text())
    return ws, {name: step.get("seconds") for name, step in manifest["steps"].items()}


def index_facts(ws: Path | None) -> dict:
    """Size on disk, structure and build-time recall@20 of the text and sequence indexes a stack serves."""
    from tools.runtime.config import StackConfig

    config = StackConfig.for_dataset(ws) if ws else StackConfig(workspace=ROOT / "var")
    facts = {}
    for name, folder in (("text", config.index_dir), ("sequence", config.sequence_index_dir)):
        meta_path = folder / "items.json"
        if not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        facts[name] = {"items": meta["num_items"], "mib": round(sum(p.stat().st_size for p in folder.iterdir()
                                                                      if p.is_file()) / 2**20, 1),
                       **meta.get("index", {"type": "flat", "recall_at_20": 1.0})}
    return facts


class Stack:
    """``instructrec run`` in a subprocess of its own process group, until :meth:`stop`."""

    def __init__(self, ws: Path | None, log_path: Path) -> None:
        self.ws = ws
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float) -> float:
        """Seconds from the command's start until the gateway reports SERVING."""
        from tools.runtime.stack import serving_at

        command = [sys.executable, "-m", "tools.cli", "run", "--no-fill-preferences"]
        if self.ws is not None:
            command += ["--data-dir", str(self.ws)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"instructrec run exited with {self.proc.returncode}: see {self.log_path}")
            if serving_at("127.0.0.1:50051"):
                return round(time.perf_counter() - started, 1)
            time.sleep(1.0)
        raise TimeoutError(f"the stack was not SERVING within {timeout_s:.0f} s: see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def measure_stack(ws: Path | None, data_dir: Path, store: Path, config: ScaleConfig, label: str) -> dict:
    """Start the stack, measure it (every kind at every concurrency, memory, store lookups), stop it."""
    import asyncio

    from tools.bench import scale_probe

    stack = Stack(ws, config.work_dir / "logs" / f"{label}.log")
    try:
        ready_s = stack.start(config.ready_timeout_s)
        work = scale_probe.workload(data_dir, config.requests * len(CONCURRENCY))
        kinds: dict[str, dict] = {}
        for kind, requests in work.requests.items():
            per = len(requests) // len(CONCURRENCY)
            catalog = work.catalog if kind == "exclude_half" else None
            kinds[kind] = {f"c{c}": asyncio.run(scale_probe.measure("127.0.0.1:50051",
                                                                    requests[n * per:(n + 1) * per], c, catalog))
                           for n, c in enumerate(CONCURRENCY)}
        memory = scale_probe.process_memory(stack.proc.pid)
        store_lookup = scale_probe.store_lookup(str(store), work.users[:500])
    finally:
        stack.stop()
    return {"ready_s": ready_s, "kinds": kinds, "memory": memory, "store_lookup": store_lookup,
            "filter": list(work.filter_value), "excluded_values": list(work.excluded_values),
            "excluded_share_asked": work.excluded_share}


def run(config: ScaleConfig) -> dict:
    """Every size, then the report; returns it."""
    from tools.bench.scale_report import summarise, write_report
    from tools.runtime.config import StackConfig

    command = "instructrec " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "bench-scale" in sys.argv else (
        "instructrec bench-scale")
    report: dict = {"command": command, "machine": machine(),
                    "config": {k: v for k, v in asdict(config).items() if k not in ("work_dir", "out")},
                    "sizes": []}
    if config.baseline:
        base = StackConfig(workspace=ROOT / "var")
        report["baseline_run"] = {"items": 1682, "data_dir": "var/data/movielens-100k",
                                  **measure_stack(None, base.data_dir, base.interaction_store, config, "baseline"),
                                  "indexes": index_facts(None)}
    for size in config.sizes:
        ws, steps = prepare(size, config)
        served = StackConfig.for_dataset(ws)
        entry = {"items": size.items, "users": size.users, "mean_history": size.mean_history, "steps_s": steps,
                 "indexes": index_facts(ws),
                 **measure_stack(ws, served.data_dir, served.interaction_store, config, size.name)}
        report["sizes"].append(entry)
        write_report(summarise(report), config.out)  # after every size: a run cut short keeps what it measured
    return write_report(summarise(report), config.out)
