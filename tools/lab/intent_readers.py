"""Which model reads an intention best: the language model or the 22M text encoder (issue #15's question).

Every reader is judged on the evaluation bank (``tools/eval/intentions.py``: 36 vague paraphrases, 432 specific
"genre + decade" requests), and every trained one learns from the training bank only (the examples the served
intent heads train on, ``tools/train/intent.py``):

* **SmolLM2, zero-shot lettered choice**: the ranker's own format (the genres as lettered candidates, the label
  logits after "Answer:"), base model and with the committed ranker adapter;
* **SmolLM2, zero-shot genre-name likelihood**: each genre's name as the continuation of "A viewer asks for a
  film: "<request>". The film genre they want is", mean log-probability per token, minus the same for the
  content-free request "a film" (calibration: the LM's prior over the names cancels);
* **SmolLM2 + LoRA genre reader**: the same likelihood reading after LoRA (r 8, q/v, 3 epochs, lr 5e-4, fixed in
  advance) trained to write the genre's name after the training bank's requests that name one;
* **SmolLM2 features + heads**: the served heads' softmax regression on the LM's mean-pooled last hidden state;
* **MiniLM features + heads**: the same on the base all-MiniLM-L6-v2 sentence embedding (the served heads use
  the *tuned* text encoder through Triton; the served stack's figures are in search.md).

Scores: genre read right (named with 1 - p(NONE) >= 0.5 and the top value right), decade read right on the
specific requests, and on the vague ones the share where the decade head rightly says NONE.

    python -m tools.lab.intent_readers --out docs/lab/intent-readers

About 40 minutes on 2 cores (2,269 s on 2026-12-03).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import typer

from services.core.catalog import GENRES, Catalog
from services.core.contracts import RANKER_ANSWER_PREFIX
from services.core.intent import NONE, IntentModel
from tools.core.machine import machine
from tools.eval.intentions import EVAL_SPECIFIC_TEMPLATES, EVAL_VAGUE_BANK
from tools.train.intent import choose_l2, fit_intent_model, intent_examples

Reader = Callable[[Sequence[str]], np.ndarray]
LORA_LR = 5e-4
LORA_EPOCHS = 3
# How the likelihood readers name a genre where the catalog's label is not a word an LM would write.
GENRE_NAMES = {"Sci-Fi": "science fiction", "Film-Noir": "film noir", "Children's": "children's film"}


def evaluation_requests(catalog: Catalog) -> dict[str, list[tuple[str, str, str | None]]]:
    """(text, genre, decade or None) per kind, from the evaluation bank only."""
    decades = sorted({str(i.year // 10 * 10) for i in catalog if i.year}, key=int)
    vague = [(p, g, None) for g, ps in EVAL_VAGUE_BANK.items() for p in ps]
    specific = [(t.format(genre=g.lower(), decade=d), g, d)
                for t in EVAL_SPECIFIC_TEMPLATES for g in sorted(EVAL_VAGUE_BANK) for d in decades]
    return {"vague": vague, "specific": specific}


def score_heads(model: IntentModel, embed: Reader, requests: dict) -> dict[str, float]:
    out = {}
    for kind, rows in requests.items():
        x = embed([t for t, _, _ in rows])
        genre = decade = 0
        for (_, g, d), e in zip(rows, x):
            read = {u.attribute: u.value for u in model.understand(e)}
            genre += read.get("genres") == g
            decade += (read.get("year") == d) if d else ("year" not in read)
        out[f"{kind} genre"] = genre / len(rows)
        out[f"{kind} decade" if kind == "specific" else "vague decade NONE"] = decade / len(rows)
    return out


def _mean_pool(hidden, mask) -> np.ndarray:
    m = mask.unsqueeze(-1).float()
    return ((hidden * m).sum(1) / m.sum(1)).numpy()


def main(
    out: Path = typer.Option(Path("docs/lab/intent-readers"), help="Writes OUT.json and OUT.md."),
    data_dir: Path = typer.Option(Path("var/data/movielens-100k")),
    base_dir: Path = typer.Option(Path("var/base_models/smollm2-135m-instruct")),
    adapter_dir: Path = typer.Option(Path("tools/train/adapters/ranker")),
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from tools.core.base_models import minilm_dir

    torch.set_num_threads(2)
    started = time.time()
    catalog = Catalog.load(data_dir / "items.jsonl")
    requests = evaluation_requests(catalog)
    examples, heads = intent_examples(catalog)
    genres = list(heads["genres"][0])
    results: dict[str, dict[str, float]] = {}

    tok = AutoTokenizer.from_pretrained(base_dir)
    lm = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    letters = [chr(65 + i) for i in range(len(genres))]
    label_ids = [tok(" " + a, add_special_tokens=False)["input_ids"][0] for a in letters]

    def lettered(model) -> dict[str, float]:
        choices = "\n".join(f"{a}. {g}" for a, g in zip(letters, genres))
        out = {}
        for kind, rows in requests.items():
            right = 0
            for start in range(0, len(rows), 16):
                batch = rows[start:start + 16]
                texts = [tok.apply_chat_template([{"role": "user", "content": (
                    f'The user is looking for: "{t}".\nWhich genre fits that request best?\nCandidates:\n{choices}\n'
                    "Answer with the letter of the one genre that fits.")}], add_generation_prompt=True,
                    tokenize=False) + RANKER_ANSWER_PREFIX for t, _, _ in batch]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, padding_side="left")
                with torch.no_grad():
                    logits = model(**enc).logits[:, -1, label_ids]
                right += sum(genres[int(r.argmax())] == g for r, (_, g, _) in zip(logits, batch))
            out[f"{kind} genre"] = right / len(rows)
        return out

    names = {g: GENRE_NAMES.get(g, g.lower()) for g in genres}
    name_ids = [tok(" " + names[g], add_special_tokens=False)["input_ids"] for g in genres]

    def prompt_ids(text: str) -> list[int]:
        return tok(f'A viewer asks for a film: "{text}". The film genre they want is',
                   add_special_tokens=False)["input_ids"]

    def name_scores(model, text: str) -> np.ndarray:
        """Mean log-probability per token of each genre's name after the request (one batch of 18)."""
        prompt = prompt_ids(text)
        width = max(len(c) for c in name_ids)
        ids = torch.tensor([prompt + c + [tok.eos_token_id] * (width - len(c)) for c in name_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.float(), -1)
        return np.array([np.mean([float(logp[j, len(prompt) - 1 + k, t]) for k, t in enumerate(c)])
                         for j, c in enumerate(name_ids)])

    def likelihood_reader(model, calibrate: bool) -> dict[str, float]:
        prior = name_scores(model, "a film") if calibrate else 0.0
        return {f"{kind} genre": float(np.mean([genres[int((name_scores(model, t) - prior).argmax())] == g
                                                for t, g, _ in rows]))
                for kind, rows in requests.items()}

    def lora_reader():
        """LoRA on SmolLM2, trained to write the genre's name after the request, on the training bank's examples
        that name a genre (settings fixed in advance, not chosen on the evaluation bank)."""
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
        pairs = [(e.text, genres.index(e.labels[GENRES])) for e in examples if e.labels.get(GENRES, NONE) != NONE]
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=LORA_LR)
        rng = random.Random(0)
        model.train()
        for _ in range(LORA_EPOCHS):
            rng.shuffle(pairs)
            for start in range(0, len(pairs), 16):
                rows = [(prompt_ids(t), name_ids[g] + [tok.eos_token_id]) for t, g in pairs[start:start + 16]]
                width = max(len(a) + len(b) for a, b in rows)
                ids = torch.tensor([a + b + [tok.eos_token_id] * (width - len(a) - len(b)) for a, b in rows])
                labels = torch.tensor([[-100] * len(a) + b + [-100] * (width - len(a) - len(b)) for a, b in rows])
                mask = torch.tensor([[1] * (len(a) + len(b)) + [0] * (width - len(a) - len(b)) for a, b in rows])
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
        return model.eval(), len(pairs)

    results["SmolLM2 base, zero-shot genre-name likelihood (calibrated)"] = likelihood_reader(lm, calibrate=True)
    reader, trained_on = lora_reader()
    results[f"SmolLM2 + LoRA genre reader ({trained_on} training-bank examples, {LORA_EPOCHS} epochs)"] = \
        likelihood_reader(reader, calibrate=False)
    del reader
    results["SmolLM2 base, zero-shot lettered choice"] = lettered(lm)
    if adapter_dir.exists():
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter_dir)).eval()
        results["SmolLM2 + ranker adapter, zero-shot lettered choice"] = lettered(tuned)
        del tuned

    def lm_features(texts: Sequence[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), 32):
            enc = tok([f'Request: "{t}"' for t in texts[start:start + 32]], return_tensors="pt", padding=True,
                      add_special_tokens=False)
            with torch.no_grad():
                rows.append(_mean_pool(lm.model(**enc).last_hidden_state, enc["attention_mask"]))
        return np.concatenate(rows)

    mtok = AutoTokenizer.from_pretrained(minilm_dir())
    mini = AutoModel.from_pretrained(minilm_dir()).eval()

    def minilm_features(texts: Sequence[str]) -> np.ndarray:
        enc = mtok(list(texts), return_tensors="pt", padding=True)
        with torch.no_grad():
            v = _mean_pool(mini(**enc).last_hidden_state, enc["attention_mask"])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for name, embed in (("SmolLM2 features + heads", lm_features), ("MiniLM (base) features + heads", minilm_features)):
        x = embed([e.text for e in examples])
        l2, _ = choose_l2(x, examples, heads)
        model = fit_intent_model(x, examples, heads, l2=l2)
        results[name] = score_heads(model, embed, requests) | {"L2 (chosen by training-bank CV)": l2}

    record = {"results": results, "requests": {k: len(v) for k, v in requests.items()},
              "training_examples": len(examples), "seconds": round(time.time() - started, 1),
              "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    columns = ["vague genre", "specific genre", "specific decade", "vague decade NONE"]
    lines = ["# Intention readers: LM against the text encoder", "", "    python -m tools.lab.intent_readers", "",
             f"Evaluation bank: {record['requests']['vague']} vague, {record['requests']['specific']} specific "
             f"requests; heads trained on {len(examples)} training-bank examples; {record['seconds']} s on "
             f"{record['machine']['cpus']} CPUs ({', '.join(record['machine']['cpu_flags'])}), {record['date']}.", "",
             "| reader | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c in r else "" for c in columns) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
