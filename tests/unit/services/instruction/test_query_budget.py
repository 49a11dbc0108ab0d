"""Long queries are cut at a word boundary to the prompt budget, and the default budget fits the ranker.

The last test measures with SmolLM2's real tokenizer and chat template (what the ranker's ``model.py``
applies) and the real MovieLens-100k catalog that ``instructrec prepare`` writes: with the default
``INSTRUCTION_PROMPT_QUERY_MAX_BYTES``, 20 candidates, 10 history titles, a 48-token preference statement and
the worst junk a query can be (emoji, CJK, control characters, random code points), the prompt stays under
the ranker's ``max_prompt_tokens``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from services.core import prompts
from services.core.catalog import Catalog, Item
from services.core.validation import Limits
from services.instruction.instruction import InstructionWriter, fit_query
from services.instruction.settings import InstructionSettings

ROOT = Path(__file__).resolve().parents[4]
CATALOG = Catalog({str(i): Item(str(i), f"Movie {i}", 2000, ("Comedy",)) for i in range(30)})
RANKER_MAX_PROMPT_TOKENS = 1024  # model_repository/ranker/config.pbtxt (tools/export's default)


@pytest.mark.parametrize(
    ("query", "max_bytes", "fitted", "truncated"),
    [
        ("a funny movie", 13, "a funny movie", False),
        ("  a funny movie  ", 13, "a funny movie", False),  # surrounding spaces do not count
        ("a funny movie for tonight", 13, "a funny movie", True),  # the cut falls on a space
        ("a funny movie for tonight", 16, "a funny movie", True),  # inside "for": back to the last space
        ("a funny\tmovie\nplease", 14, "a funny\tmovie", True),  # any whitespace is a boundary
        ("supercalifragilistic movie", 10, "supercalif", True),  # one word longer than the budget: cut in it
    ],
)
def test_fit_query_cuts_at_a_word_boundary_within_the_byte_budget(query, max_bytes, fitted, truncated):
    assert fit_query(query, max_bytes) == (fitted, truncated)


def test_the_budget_counts_utf8_bytes_and_never_splits_a_character():
    assert fit_query("über straße", 13) == ("über straße", False)  # 11 characters, 13 bytes
    assert fit_query("über straße", 12) == ("über", True)
    assert fit_query("😀😀😀", 9) == ("😀😀", True)  # 4 bytes each: the third does not fit, none is split
    for n in range(0, 40):
        text, _ = fit_query("日本語のクエリ 😀 émoji mixed", n)
        assert len(text.encode("utf-8")) <= n


def _writer(max_bytes: int) -> InstructionWriter:
    return InstructionWriter(
        CATALOG, None, recent_history_items=5,
        item_noun="movie", limits=Limits(max_query_chars=1_000), prompt_query_max_bytes=max_bytes,
    )


async def test_the_instruction_carries_the_cut_query_and_says_so():
    query = "a gentle comedy " * 40  # 640 characters
    r = await _writer(100).write(["1"], query, ["2", "3"])
    assert r.query_truncated and r.template_id == "P1-I1-T3-0"
    carried = r.text.split('looking for: "', 1)[1].split('"', 1)[0]
    assert len(carried.encode()) <= 100 and query.startswith(carried) and query[len(carried)] == " "  # whole words
    short = await _writer(100).write(["1"], "a gentle comedy", ["2", "3"])
    assert not short.query_truncated and 'looking for: "a gentle comedy"' in short.text


async def test_a_query_of_only_spaces_is_no_query_and_not_truncated():
    r = await _writer(5).write([], " " * 50, ["2"])
    assert r.template_id == "P0-I0-T3-0" and not r.query_truncated


def _junk_queries(rng: random.Random, n_chars: int) -> dict[str, str]:
    def pick(lo: int, hi: int) -> str:
        return "".join(chr(rng.randint(lo, hi)) for _ in range(n_chars))

    letters = "abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*()\"'{}"
    return {
        "ascii junk": "".join(rng.choice(letters) for _ in range(n_chars)),
        "junk words": " ".join("".join(rng.choice("qxzjkvw") for _ in range(rng.randint(1, 9)))
                               for _ in range(n_chars // 4))[:n_chars],
        "emoji": pick(0x1F300, 0x1F5FF),
        "cjk": pick(0x4E00, 0x9FFF),
        "control": pick(0x01, 0x1F),
        "any code point": "".join(c for c in pick(0x80, 0x10FFFF) if not 0xD800 <= ord(c) <= 0xDFFF),
    }


def test_the_default_budget_keeps_the_rankers_prompt_under_its_token_limit():
    items_path = ROOT / "var" / "data" / "movielens-100k" / "items.jsonl"
    if not items_path.is_file():
        pytest.skip("needs `instructrec prepare` (the MovieLens-100k catalog)")
    from transformers import AutoTokenizer

    from tools.core.base_models import smollm2_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir(ROOT / "var")))

    def prompt_tokens(instruction: str) -> int:  # what model_repository/ranker/*/model.py feeds the model
        chat = tokenizer.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True,
                                             tokenize=False)
        return len(tokenizer(chat + prompts.RANKER_ANSWER_PREFIX, add_special_tokens=False)["input_ids"])

    budget = InstructionSettings.model_fields["prompt_query_max_bytes"].default
    catalog = Catalog.load(items_path)
    items = [catalog[i] for i in catalog.items]
    preference_ids = tokenizer("The user loves dark, suspenseful crime thrillers and quirky comedies " * 8,
                               add_special_tokens=False)["input_ids"][:48]  # max_new_tokens of the generator
    preference = tokenizer.decode(preference_ids)
    template = prompts.TEMPLATES_BY_ID["P2-I1-T3-0"]  # the longest serving template
    rng = random.Random(18)
    worst = 0
    for _ in range(40):
        candidates, history = rng.sample(items, 20), rng.sample(items, 10)
        for name, junk in _junk_queries(rng, 1_000).items():
            query, truncated = fit_query(junk, budget)
            assert truncated, name
            instruction = prompts.render_instruction(template, history=history, candidates=candidates, query=query,
                                                     preference=preference)
            tokens = prompt_tokens(instruction)
            worst = max(worst, tokens)
            assert tokens <= RANKER_MAX_PROMPT_TOKENS, (name, tokens)
    print(f"\nlongest prompt with {budget}-byte junk queries: {worst} tokens (limit {RANKER_MAX_PROMPT_TOKENS})")
