"""How faithful the served preference generator is to the teacher it was tuned on, and how often it contradicts itself.

For each evaluated user (the test cases of the split: history = everything before the test item, the last
``max_history_items`` of it, as the instruction service sends it), the generator writes a statement from
``prompts.render_preference_prompt`` exactly as Triton's ``preference_generator`` does (the chat template's
user turn, greedy decoding, ``max_new_tokens``), cut to whole sentences as the instruction service cuts it.
The teacher (``tools.core.teacher.explicit_preference``) writes its statement for the same recent items with the
user's ratings. Both are parsed with :mod:`services.core.statements` against the catalog's genres, and compared:

* genre precision / recall of likes and of dislikes (micro-averaged over users; a 95 % interval from a
  bootstrap over users);
* decade agreement (the same set of decades; the same first decade);
* the contradiction rate before and after :func:`services.core.statements.clean_statement`.

A second reference, the *rating-blind teacher* (the teacher with every rating unknown, i.e. what the prompt,
which shows titles and genres but no ratings, lets anyone infer), separates what the generator could learn
from its input from what it can only guess: the teacher's dislikes come from ratings the prompt never shows.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from services.common.settings import ROOT
from services.core import prompts
from services.core.catalog import Catalog, read_interactions
from services.core.contracts import PREFERENCE_GENERATOR, RECENT_HISTORY_ITEMS
from services.core.statements import (
    ParsedStatement,
    clean_statement,
    complete_sentences,
    contradictions,
    parse_statement,
    repetitions,
)
from tools.core import teacher
from tools.core.split import Case, load_split

log = logging.getLogger(__name__)

DEFAULT_REPOSITORY = ROOT / "model_repository"
DEFAULT_OUT_DIR = ROOT / "docs" / "evaluation"
REPORT_NAME = "faithfulness"
BOOTSTRAP_ROUNDS = 1000

# Writes one statement per preference prompt (the served generator, or a stub in tests).
GenerateFn = Callable[[list[str]], list[str]]


@dataclass
class FaithfulnessConfig:
    """What to measure and with which generator."""

    data_dir: Path
    model_dir: Path | None = None
    """A Hugging Face causal-LM folder; None = the latest exported ``preference_generator`` version in
    ``repository`` (what Triton serves)."""
    repository: Path = DEFAULT_REPOSITORY
    out_dir: Path | None = DEFAULT_OUT_DIR
    """Where ``faithfulness.md`` and ``faithfulness.json`` go; None = write nothing."""
    max_users: int | None = None
    """Evaluate a seeded random sample of this many test users; None = all of them."""
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 48
    """The served generation budget (``preference_generator``'s ``max_new_tokens`` parameter)."""
    max_history_items: int = RECENT_HISTORY_ITEMS
    threads: int = 0
    """torch intra-op threads; 0 = torch's default."""
    examples: int = 8
    """Contradicting statements (with their cleaned form) quoted in the report."""


@dataclass
class UserResult:
    """One user's statements: the teacher's, the rating-blind teacher's, the generated one and what is served."""

    user_id: str
    teacher: str
    blind_teacher: str
    generated: str
    cleaned: str | None
    contradictions: list[str] = field(default_factory=list)


def sample_cases(cases: Sequence[Case], max_users: int | None, seed: int) -> list[Case]:
    """All cases, or a seeded random sample of ``max_users`` of them in their original order."""
    if max_users is None or max_users >= len(cases):
        return list(cases)
    chosen = set(random.Random(f"faithfulness:{seed}").sample(range(len(cases)), max_users))
    return [c for n, c in enumerate(cases) if n in chosen]


def _ratings(data_dir: Path) -> dict[tuple[str, str], float | None]:
    return {(r.user_id, r.item_id): r.rating for r in read_interactions(Path(data_dir) / "interactions.csv")}


def teacher_statements(catalog: Catalog, case: Case, ratings: dict[tuple[str, str], float | None],
                       max_history_items: int) -> tuple[str, str]:
    """The teacher's statement for the case's recent items with the user's ratings, and without them."""
    recent = [catalog[i] for i in case.history[-max_history_items:]]
    rated = [(item, ratings.get((case.user_id, item.item_id))) for item in recent]
    return teacher.explicit_preference(rated), teacher.explicit_preference([(item, None) for item in recent])


def hf_generator(model_dir: Path, max_new_tokens: int, threads: int = 0) -> GenerateFn:
    """The served generator in this process: what ``model_repository/preference_generator/1/model.py`` runs
    (chat template user turn, left padding, greedy ``generate()`` with the KV cache, new tokens decoded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.core.modeltext import ranker_model_text

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def generate(prompt_texts: list[str]) -> list[str]:
        texts = [ranker_model_text(tokenizer, p, answer_prefix="") for p in prompt_texts]
        batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")  # [B, L], left
        with torch.inference_mode():
            output = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                    pad_token_id=tokenizer.pad_token_id)  # [B, L + new]
        new = output[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]

    return generate


def served_model_dir(repository: Path) -> Path:
    """The latest exported ``preference_generator`` version folder (the one Triton serves)."""
    from tools.export.versions import latest_version

    version = latest_version(repository, PREFERENCE_GENERATOR)
    if version is None:
        raise FileNotFoundError(f"no exported {PREFERENCE_GENERATOR} in {repository}: run `instructrec prepare`")
    return Path(repository) / PREFERENCE_GENERATOR / str(version)


def _sets(parsed: ParsedStatement) -> dict[str, set]:
    return {"likes": set(parsed.likes), "dislikes": set(parsed.dislikes), "decades": set(parsed.decades)}


def _ratio_with_interval(hits: np.ndarray, totals: np.ndarray, rng: np.random.Generator) -> dict[str, float | None]:
    """sum(hits) / sum(totals) over users, with a 95 % bootstrap interval over users (None when no total)."""
    if totals.sum() == 0:
        return {"value": None, "low": None, "high": None}
    n = len(hits)
    draws = rng.integers(0, n, size=(BOOTSTRAP_ROUNDS, n))
    h, t = hits[draws].sum(axis=1), totals[draws].sum(axis=1)
    boot = h[t > 0] / t[t > 0]
    return {"value": float(hits.sum() / totals.sum()), "low": float(np.quantile(boot, 0.025)),
            "high": float(np.quantile(boot, 0.975))}


def _rate(flags: Sequence[bool]) -> dict[str, float]:
    """A proportion over users and its standard error."""
    n = len(flags)
    p = sum(flags) / n if n else 0.0
    return {"value": p, "se": float(np.sqrt(p * (1 - p) / n)) if n else 0.0, "count": int(sum(flags))}


def compare(candidates: Sequence[str], references: Sequence[str], vocabulary: Sequence[str],
            seed: int = 0) -> dict[str, dict]:
    """Precision / recall of ``candidates``' liked and disliked values and decades against ``references``'."""
    rng = np.random.default_rng(seed)
    got = [_sets(parse_statement(c, vocabulary)) for c in candidates]
    want = [_sets(parse_statement(r, vocabulary)) for r in references]
    out: dict[str, dict] = {}
    for key in ("likes", "dislikes", "decades"):
        overlap = np.array([len(g[key] & w[key]) for g, w in zip(got, want)], dtype=np.float64)
        n_got = np.array([len(g[key]) for g in got], dtype=np.float64)
        n_want = np.array([len(w[key]) for w in want], dtype=np.float64)
        out[key] = {
            "precision": _ratio_with_interval(overlap, n_got, rng),
            "recall": _ratio_with_interval(overlap, n_want, rng),
            "same_set": _rate([g[key] == w[key] for g, w in zip(got, want)]),
            "stated": _rate([bool(g[key]) for g in got]),
            "in_reference": _rate([bool(w[key]) for w in want]),
        }
    first = [parse_statement(c, vocabulary).decades[:1] == parse_statement(r, vocabulary).decades[:1]
             for c, r in zip(candidates, references)]
    out["decades"]["same_first"] = _rate(first)
    out["exact_match"] = _rate([c == r for c, r in zip(candidates, references)])
    return out


def summarize(results: Sequence[UserResult], vocabulary: Sequence[str], seed: int = 0) -> dict:
    """All figures of the report from the users' statements."""
    generated = [r.generated for r in results]
    served = [r.cleaned or "" for r in results]
    teachers = [r.teacher for r in results]
    after = [bool(r.cleaned) and bool(contradictions(parse_statement(r.cleaned, vocabulary))) for r in results]
    repeated = [bool(repetitions(parse_statement(r.generated, vocabulary))) for r in results]
    repeated_after = [bool(r.cleaned) and bool(repetitions(parse_statement(r.cleaned, vocabulary))) for r in results]
    return {
        "users": len(results),
        "generated_vs_teacher": compare(generated, teachers, vocabulary, seed),
        "cleaned_vs_teacher": compare(served, teachers, vocabulary, seed),
        "blind_teacher_vs_teacher": compare([r.blind_teacher for r in results], teachers, vocabulary, seed),
        "generated_vs_blind_teacher": compare(generated, [r.blind_teacher for r in results], vocabulary, seed),
        "contradictions": {
            "before_cleaning": _rate([bool(r.contradictions) for r in results]),
            "after_cleaning": _rate(after),
            "changed_by_cleaning": _rate([r.cleaned != complete_sentences(r.generated) for r in results]),
            "nothing_left": _rate([r.cleaned is None for r in results]),
            "teacher": _rate([bool(contradictions(parse_statement(t, vocabulary))) for t in teachers]),
        },
        "repetitions": {"before_cleaning": _rate(repeated), "after_cleaning": _rate(repeated_after)},
        "unparsed": _rate([not (p.likes or p.dislikes or p.no_preference)
                           for p in (parse_statement(g, vocabulary) for g in generated)]),
    }


def run_faithfulness(config: FaithfulnessConfig, generate: GenerateFn | None = None) -> dict:
    """Generate, compare and (unless ``out_dir`` is None) write ``faithfulness.md`` and ``faithfulness.json``.

    Args:
        config: What to measure.
        generate: Writes statements for a batch of preference prompts; None = the served generator in this
            process (:func:`hf_generator` on ``config.model_dir`` or the latest exported version).

    Returns:
        The report (what ``faithfulness.json`` holds).
    """
    split = load_split(Path(config.data_dir))
    catalog = split.catalog
    vocabulary = sorted({g for item in catalog.items.values() for g in item.genres})
    ratings = _ratings(config.data_dir)
    cases = sample_cases(split.test_cases, config.max_users, config.seed)
    model_dir = None
    if generate is None:
        model_dir = Path(config.model_dir) if config.model_dir else served_model_dir(config.repository)
        generate = hf_generator(model_dir, config.max_new_tokens, config.threads)
    started = time.monotonic()
    results: list[UserResult] = []
    bar = tqdm(total=len(cases), desc="preference statements", unit="user")
    for start in range(0, len(cases), config.batch_size):
        group = cases[start: start + config.batch_size]
        texts = [prompts.render_preference_prompt([catalog[i] for i in c.history],
                                                  max_history_items=config.max_history_items) for c in group]
        for case, raw in zip(group, generate(texts)):
            statement = complete_sentences(raw)
            taught, blind = teacher_statements(catalog, case, ratings, config.max_history_items)
            results.append(UserResult(case.user_id, taught, blind, statement, clean_statement(statement, vocabulary),
                                      contradictions(parse_statement(statement, vocabulary))))
        bar.update(len(group))
    bar.close()
    seconds = time.monotonic() - started
    report = {
        "config": {"data_dir": _rel(config.data_dir), "model_dir": _rel(model_dir) if model_dir else "(given)",
                   "max_users": config.max_users, "seed": config.seed, "batch_size": config.batch_size,
                   "max_new_tokens": config.max_new_tokens, "max_history_items": config.max_history_items,
                   "threads": config.threads},
        "population": len(split.test_cases),
        "sampled": len(cases) < len(split.test_cases),
        "generation_seconds": round(seconds, 1),
        "seconds_per_statement": round(seconds / max(1, len(cases)), 3),
        "model": _model_metadata(model_dir),
        **summarize(results, vocabulary, config.seed),
        "statements": [asdict(r) for r in results],
    }
    if config.out_dir is not None:
        write_report(report, Path(config.out_dir), config.examples)
    return report


def rescore_report(json_path: Path, data_dir: Path, out_dir: Path | None = None, examples: int = 8) -> dict:
    """Clean and score again the statements a report stored (after a change to :mod:`services.core.statements`),
    without generating them again; rewrites the report in ``out_dir`` (default: beside ``json_path``)."""
    report = json.loads(Path(json_path).read_text())
    catalog = Catalog.load(Path(data_dir) / "items.jsonl")
    vocabulary = sorted({g for item in catalog.items.values() for g in item.genres})
    results = []
    for s in report["statements"]:
        generated = s["generated"]
        results.append(UserResult(s["user_id"], s["teacher"], s["blind_teacher"], generated,
                                  clean_statement(generated, vocabulary),
                                  contradictions(parse_statement(generated, vocabulary))))
    report.update(summarize(results, vocabulary, report["config"]["seed"]))
    report["statements"] = [asdict(r) for r in results]
    report["rescored"] = True
    write_report(report, Path(out_dir) if out_dir else Path(json_path).parent, examples)
    return report


def _rel(path: Path | None) -> str:
    """``path`` relative to the repository when inside it, so the committed report holds no machine paths."""
    if not path:
        return ""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _model_metadata(model_dir: Path | None) -> dict:
    if model_dir is None or not (Path(model_dir) / "metadata.json").is_file():
        return {}
    meta = json.loads((Path(model_dir) / "metadata.json").read_text())
    return {k: meta.get(k) for k in ("model", "adapter", "source_sha256", "exported_at")}


def _pct(x: dict) -> str:
    value = x.get("value")
    if value is None:
        return "n/a"
    if "low" in x:
        return f"{value:.3f} [{x['low']:.3f}, {x['high']:.3f}]"
    return f"{value:.3f} ± {x['se']:.3f} ({x['count']})"


def _comparison_rows(name: str, c: dict) -> list[str]:
    return [
        f"| {name} | likes | {_pct(c['likes']['precision'])} | {_pct(c['likes']['recall'])} | "
        f"{_pct(c['likes']['same_set'])} |",
        f"| {name} | dislikes | {_pct(c['dislikes']['precision'])} | {_pct(c['dislikes']['recall'])} | "
        f"{_pct(c['dislikes']['same_set'])} |",
        f"| {name} | decades | {_pct(c['decades']['precision'])} | {_pct(c['decades']['recall'])} | "
        f"{_pct(c['decades']['same_set'])} |",
    ]


def write_report(report: dict, out_dir: Path, examples: int = 8) -> tuple[Path, Path]:
    """``faithfulness.json`` (every figure and statement) and ``faithfulness.md`` (the tables, examples)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{REPORT_NAME}.json", out_dir / f"{REPORT_NAME}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    n, population = report["users"], report["population"]
    who = (f"a seeded random sample of {n} of the {population} test users (seed {report['config']['seed']})"
           if report["sampled"] else f"all {n} test users")
    g, c = report["generated_vs_teacher"], report["contradictions"]
    bad = [s for s in report["statements"] if s["contradictions"]][:examples]
    adapter = report["model"].get("adapter") or {}
    source = "merged LoRA" if adapter.get("merged") else "none: the base model" if not adapter else str(adapter)
    lines = [
        "# Preference statements: faithfulness to the teacher, and contradictions",
        "",
        f"Generator: `{report['config']['model_dir']}` (adapter: {source}), "
        f"greedy, {report['config']['max_new_tokens']} new tokens, the last {report['config']['max_history_items']} "
        f"items of each test case's history (everything before the test item), prompt "
        "`services.core.prompts.render_preference_prompt`, as Triton's `preference_generator` runs it. Users: "
        f"{who}. Generation took {report['generation_seconds']} s ({report['seconds_per_statement']} s per "
        f"statement, batch {report['config']['batch_size']}) on this machine"
        + ("" if not report["sampled"] else
           f"; all {population} would take about {report['seconds_per_statement'] * population / 60:.0f} min") + ".",
        "",
        "Written by `tools.eval.faithfulness.run_faithfulness`; every statement is in "
        f"`{REPORT_NAME}.json`"
        + (" (cleaned and scored again from the stored statements by `rescore_report`)" if report.get("rescored")
           else "") + ". Statements are parsed by `services/core/statements.py` against the catalog's "
        "genres. Precision and recall are micro-averaged over users with a 95 % bootstrap interval over users; "
        "rates carry their standard error and count. Configuration: "
        + ", ".join(f"`{k}={v}`" for k, v in report["config"].items()) + ".",
        "",
        "## Contradictions (a genre both liked and disliked, or \"no clear preferences\" next to named ones)",
        "",
        "`clean_statement` removes a genre both liked and disliked from the dislikes (the teacher's rule: a "
        "disliked genre is one never liked) and names a repeated genre or decade once; \"changed by cleaning\" "
        "counts both.",
        "",
        "| | rate |",
        "|---|---|",
        f"| generated statements | {_pct(c['before_cleaning'])} |",
        f"| served after `clean_statement` | {_pct(c['after_cleaning'])} |",
        f"| changed by cleaning | {_pct(c['changed_by_cleaning'])} |",
        f"| nothing coherent left (None: serve the implicit preference) | {_pct(c['nothing_left'])} |",
        f"| teacher statements (by construction 0) | {_pct(c['teacher'])} |",
        f"| generated statements naming a genre or decade twice in one list (\"the 1990s and 1990s\") | "
        f"{_pct(report['repetitions']['before_cleaning'])} |",
        f"| the same, served after `clean_statement` | {_pct(report['repetitions']['after_cleaning'])} |",
        f"| generated statements the parser reads nothing from | {_pct(report['unparsed'])} |",
        "",
        "## Agreement with the teacher (same recent items, with the user's ratings)",
        "",
        "| statement | part | precision | recall | same set |",
        "|---|---|---|---|---|",
        *_comparison_rows("generated", g),
        *_comparison_rows("served (cleaned)", report["cleaned_vs_teacher"]),
        *_comparison_rows("rating-blind teacher", report["blind_teacher_vs_teacher"]),
        "",
        f"Same first decade as the teacher: generated {_pct(g['decades']['same_first'])}. Exact string match: "
        f"generated {_pct(g['exact_match'])}. The teacher names dislikes for "
        f"{_pct(g['dislikes']['in_reference'])} of users; the generator for {_pct(g['dislikes']['stated'])}.",
        "",
        "The *rating-blind teacher* is the teacher with every rating unknown: the statement the prompt alone "
        "supports, since the prompt shows titles and genres but not ratings. It never names dislikes; the teacher's "
        "dislikes (genres rated <= 2 and never rated >= 4) come only from ratings the generator is not shown, so its "
        "dislikes can only be guesses.",
        "",
        "Generated vs the rating-blind teacher (how well it summarises the genres it is shown):",
        "",
        "| statement | part | precision | recall | same set |",
        "|---|---|---|---|---|",
        *_comparison_rows("generated", report["generated_vs_blind_teacher"]),
        "",
        "## Contradicting statements and what is served instead",
        "",
        "| user | generated | served | teacher |",
        "|---|---|---|---|",
        *[f"| {s['user_id']} | {s['generated']} | {s['cleaned'] or '(none)'} | {s['teacher']} |" for s in bad],
        "",
    ]
    md_path.write_text("\n".join(lines))
    return json_path, md_path
