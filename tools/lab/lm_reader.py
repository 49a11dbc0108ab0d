"""The second request reader issue #29 asks for: SmolLM2-135M with LoRA writing the reading under constrained
decoding, measured beside the served token tagger on the same banks (``tools/eval/reading.py``).

What the LM writes: the request's labelled spans, in order, one line ``role: words ; role: words`` (``none``
when nothing is labelled), the roles of ``services/core/reading.py`` (want, alt, not, in, notin, lt, le, gt,
ge, ref). Decoding is constrained by a regular expression built per request with llguidance: a role must be
one of the roles and every span's words must be consecutive words of the request, so the output always parses
and never invents words. The spans then go through the same grounding as the tagger's (``read``), so the two
readers differ only in how they label words, and the comparison measures exactly that.

Training examples come from the training bank (``tools/train/reader_examples.py``), fresh draws each step, the
same source the tagger learns from; the held-out bank and the hand-written set are never looked at. The loss is
on the written reading only (the prompt is masked). Checkpoints every ``save_every`` steps; ``--resume``
continues from the last one.

    python -m tools.lab.lm_reader train --steps 600        # about 25 min on 2 cores
    python -m tools.lab.lm_reader evaluate --out docs/lab/lm-reader --generated 300

Needs ``llguidance`` (in the ``dev`` extra, which ``make prepare`` installs).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import typer

from services.core.reading import ROLES, Reading, Span, Word, decode_spans, read, split_words

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])

OUT = Path("var/lab/lm_reader")
PROMPT = "Label the request.\nRequest: {text}\nReading:"
NONE = "none"
SEPARATOR = " ; "
MAX_SPAN_WORDS = 8
MAX_NEW_TOKENS = 64
_ROLE_NAMES = {role.lower(): role for role in ROLES}
_REGEX_META = set("\\.+*?()|[]{}^$#&-~")


def spans_text(words: Sequence[str], labels: Sequence[int]) -> str:
    """What the LM is taught to write for a labelled request."""
    ws = [Word(w, 0, 0) for w in words]
    spans = decode_spans(ws, labels, [1.0] * len(words))
    return SEPARATOR.join(f"{s.role.lower()}: {s.text}" for s in spans) or NONE


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _REGEX_META else c for c in text)


def reading_regex(words: Sequence[str]) -> str:
    """The language the LM may write for a request of these words (after the prompt's colon): a space,
    ``none`` or spans of its consecutive words with a role each, then a newline."""
    phrases = sorted({" ".join(words[i:j]) for i in range(len(words))
                      for j in range(i + 1, min(len(words), i + MAX_SPAN_WORDS) + 1)})
    phrase = "(" + "|".join(_escape(p) for p in phrases) + ")" if phrases else "(x)"
    role = "(" + "|".join(_ROLE_NAMES) + ")"
    span = f"{role}: {phrase}"
    return f" ({NONE}|{span}({_escape(SEPARATOR)}{span})*)\n"


def parse_spans(written: str, words: Sequence[Word], confidences: Sequence[float]) -> list[Span]:
    """The spans the LM wrote, placed on the request's words left to right (an unplaceable span is dropped)."""
    out: list[Span] = []
    texts = [w.text for w in words]
    cursor = 0
    taken: set[int] = set()
    for n, part in enumerate(p for p in written.strip().split(SEPARATOR.strip()) if p.strip()):
        role, _, phrase = part.strip().partition(": ")
        if role not in _ROLE_NAMES or not phrase:
            continue
        needle = phrase.split(" ")
        starts = [i for i in range(len(texts) - len(needle) + 1) if texts[i:i + len(needle)] == needle
                  and not taken & set(range(i, i + len(needle)))]
        if not starts:
            continue
        start = next((i for i in starts if i >= cursor), starts[0])
        end = start + len(needle)
        taken.update(range(start, end))
        cursor = end
        confidence = confidences[n] if n < len(confidences) else 1.0
        out.append(Span(_ROLE_NAMES[role], start, end, " ".join(texts[start:end]), confidence))
    return sorted(out, key=lambda s: s.start)


def _load(path: Path | None, device: torch.device, base: Path | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.core.base_models import smollm2_dir

    base = base or smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    if path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    return model.to(device).eval(), tokenizer


def _batch(tokenizer, examples) -> dict[str, torch.Tensor]:
    rows, masks = [], []
    for e in examples:
        prompt = tokenizer(PROMPT.format(text=e.text))["input_ids"]
        target = tokenizer(" " + spans_text(e.words, e.labels) + "\n")["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt + target)
        masks.append([0] * len(prompt) + [1] * len(target))
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.clone()
    labels[torch.tensor([m + [0] * (width - len(m)) for m in masks]) == 0] = -100
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


@app.command()
def train(data_dir: Path = Path("var/data/movielens-100k"), out: Path = OUT, steps: int = 600,
          batch_size: int = 16, lr: float = 1e-3, lora_r: int = 16, save_every: int = 100, seed: int = 0,
          threads: int = 2, resume: bool = False, bf16: bool = False) -> None:
    """LoRA (q, k, v, o, MLP) on SmolLM2-135M-Instruct, fresh training-bank draws every step."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from tools.core.reading_examples import Renderer, generate, load_vocabulary
    from tools.train.reader_examples import TRAINING_BANK

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model, tokenizer = _load(None, torch.device("cpu"))
    state_file = out / "state.json"
    start = 0
    if resume and state_file.is_file():
        start = json.loads(state_file.read_text())["step"]
        model = PeftModel.from_pretrained(model, str(out / "adapter"), is_trainable=True)
    else:
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    warmup = min(30, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps))))
    for _ in range(start):
        schedule.step()
    renderer = Renderer(load_vocabulary(data_dir), TRAINING_BANK, "train")
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "log.jsonl").open("a")
    began, losses = time.time(), []
    for step in range(start, steps):
        examples = generate(renderer, batch_size, seed * 100_003 + step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**_batch(tokenizer, examples)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        losses.append(float(loss.detach()))
        if (step + 1) % 10 == 0:
            row = {"step": step + 1, "loss": sum(losses) / len(losses), "seconds": round(time.time() - began, 1)}
            log.write(json.dumps(row) + "\n"), log.flush()
            print(row, flush=True)
            losses = []
        if (step + 1) % save_every == 0 or step + 1 == steps:
            model.save_pretrained(str(out / "adapter"))
            state_file.write_text(json.dumps({"step": step + 1, "steps": steps, "lr": lr, "lora_r": lora_r,
                                              "batch_size": batch_size, "seed": seed, "bf16": bf16}))


class LMReader:
    """Reads requests with the LM under the per-request regex, greedy, one request at a time (KV cache)."""

    def __init__(self, adapter: Path, lexicon, titles, threads: int = 2) -> None:
        import llguidance
        import llguidance.hf

        torch.set_num_threads(threads)
        self.model, self.tokenizer = _load(adapter, torch.device("cpu"))
        self.ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer)
        self.lexicon, self.titles, self.version = lexicon, titles, f"lm:{adapter}"
        self.tokens_written = 0

    def _write(self, words: Sequence[str], text: str) -> tuple[str, list[float]]:
        import llguidance
        import llguidance.torch as lt

        grammar = llguidance.LLMatcher.grammar_from_regex(reading_regex(words))
        matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar)
        bitmask = lt.allocate_token_bitmask(1, self.ll_tokenizer.vocab_size)
        ids = self.tokenizer(PROMPT.format(text=text), return_tensors="pt")["input_ids"]
        past, written, probs = None, [], []
        with torch.no_grad():
            for _ in range(MAX_NEW_TOKENS):
                result = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = result.past_key_values
                logits = result.logits[:, -1, :].float()
                lt.fill_next_token_bitmask(matcher, bitmask, 0)
                lt.apply_token_bitmask_inplace(logits, bitmask)
                p = torch.softmax(logits, dim=-1)
                token = int(p.argmax())
                if token == self.tokenizer.eos_token_id or not matcher.consume_token(token):
                    break
                written.append(token)
                probs.append(float(p[0, token]))
                if matcher.is_stopped() or "\n" in self.tokenizer.decode([token]):
                    break
                ids = torch.tensor([[token]])
        self.tokens_written += len(written)
        return _per_span(self.tokenizer, written, probs)

    def read_many(self, texts: Sequence[str]) -> list[Reading]:
        out = []
        for text in texts:
            words = split_words(text)
            written, confidences = self._write([w.text for w in words], text)
            out.append(read(text, words, parse_spans(written, words, confidences), self.lexicon, self.titles,
                            self.version))
        return out


def _per_span(tokenizer, tokens: Sequence[int], probs: Sequence[float]) -> tuple[str, list[float]]:
    """The written text and, per span, the lowest probability of the tokens that wrote it."""
    text, confidences, current = "", [], 1.0
    for token, p in zip(tokens, probs):
        piece = tokenizer.decode([token])
        if SEPARATOR.strip() in piece:
            confidences.append(current)
            current = 1.0
        else:
            current = min(current, p)
        text += piece
    confidences.append(current)
    return text, confidences


@app.command()
def evaluate(adapter: Path = OUT / "adapter", data_dir: Path = Path("var/data/movielens-100k"),
             out: Path = Path("docs/lab/lm-reader"), generated: int = 300, seed: int = 0, threads: int = 2,
             tagger: Path = Path("tools/train/adapters/request_reader")) -> None:
    """Both readers on the held-out bank, the hand-written set and a fresh training-bank draw, with the cost
    of each (seconds per request, one request at a time, in this process)."""
    import shlex
    import sys

    from tools.core.machine import machine
    from tools.core.request_reader import InProcessReader
    from tools.eval.reading import ReadingSetup, evaluate_readers, reading_dict, write_reading_report

    started = time.time()
    setup = ReadingSetup.of(data_dir, generated, seed)
    lm = LMReader(adapter, setup.vocabulary.lexicon, setup.titles, threads)
    tag = InProcessReader(tagger, setup.vocabulary.lexicon, setup.titles, torch.device("cpu"))
    cost: dict[str, list[float]] = {"lm": [], "tagger": []}

    def timed(name, reader):
        def read_many(texts):
            out = []
            for t in texts:
                began = time.perf_counter()
                out.append(reading_dict(reader.read_many([t])[0]))
                cost[name].append(time.perf_counter() - began)
            return out
        return read_many

    results = evaluate_readers({"SmolLM2-135M + LoRA, regex-constrained (lab)": timed("lm", lm),
                                "token tagger (MiniLM + LoRA, served)": timed("tagger", tag)}, setup.banks)
    state = json.loads((adapter.parent / "state.json").read_text()) if (adapter.parent / "state.json").is_file() else {}
    meta = {"adapter": str(adapter), "training": state, "generated_per_bank": generated, "seed": seed,
            "seconds": round(time.time() - started, 1), "machine": machine(), "threads": threads,
            "seconds_per_request_p50": {k: _quantile(v, 0.5) for k, v in cost.items()},
            "seconds_per_request_p99": {k: _quantile(v, 0.99) for k, v in cost.items()},
            "lm_tokens_written_per_request": lm.tokens_written / max(1, len(cost["lm"]))}
    command = " ".join(["python -m tools.lab.lm_reader evaluate", *map(shlex.quote, sys.argv[2:])])
    print(write_reading_report(results, out, command, meta))


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else float("nan")


if __name__ == "__main__":
    app()
