import asyncio

import pytest

from services.common.errors import InvalidArgument, Unavailable
from services.core.catalog import Catalog, Item
from services.core.statements import complete_sentences as tidy_statement
from services.core.validation import Limits
from services.instruction.instruction import InstructionWriter
from services.instruction.preferences import Preferences

CATALOG = Catalog({str(i): Item(str(i), f"Movie {i}", 2000, ("Comedy",)) for i in range(30)})


class Generator:
    """Records prompts; a unit-test double for the preference_generator model."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.prompts: list[str] = []
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self, prompt: str, timeout_s: float) -> tuple[str, str]:
        self.prompts.append(prompt)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise Unavailable("model preference_generator unavailable")
        return "  Likes light\ncomedies. ", "3"


def writer(generate, wait_s: float = 5.0) -> InstructionWriter:
    preferences = Preferences(generate, None, cache_size=10, queue_size=10, workers=2, wait_s=wait_s,
                              generation_timeout_s=5.0)
    return InstructionWriter(
        CATALOG, preferences, recent_history_items=5, item_noun="movie", limits=Limits(max_query_chars=100),
        prompt_query_max_bytes=60,
    )


async def test_explicit_preference_is_generated_once_per_history_then_cached():
    gen = Generator()
    w = writer(gen)
    first = await w.write(["1", "2"], "", ["10", "11"])
    second = await w.write(["1", "2"], "funny", ["12"])
    assert first.preference_source == "explicit" and first.template_id == "P2-I0-T3-0"
    assert "Likes light comedies." in first.text and not first.preference_cached
    assert second.preference_cached and second.generator_version == "3" and second.template_id == "P2-I1-T3-0"
    assert len(gen.prompts) == 1 and "Movie 1 (2000)" in gen.prompts[0]


async def test_concurrent_requests_for_one_history_share_one_generation():
    gen = Generator(delay_s=0.05)
    w = writer(gen)
    results = await asyncio.gather(*(w.write(["1"], "", ["2"]) for _ in range(5)))
    assert len(gen.prompts) == 1
    assert all(r.preference_source == "explicit" for r in results)


async def test_slow_generation_falls_back_to_implicit_and_fills_the_cache_later():
    gen = Generator(delay_s=0.2)
    w = writer(gen, wait_s=0.01)
    first = await w.write(["1"], "", ["2"])
    assert first.preference_source == "implicit" and first.template_id == "P1-I0-T3-0" and first.preference_pending
    await asyncio.sleep(0.3)
    second = await w.write(["1"], "", ["2"])
    assert second.preference_source == "explicit" and second.preference_cached


async def test_generator_failure_serves_implicit_preference():
    w = writer(Generator(fail=True))
    assert (await w.write(["1"], "", ["2"])).preference_source == "implicit"


async def test_no_history_means_no_preference_and_no_generation():
    gen = Generator()
    r = await writer(gen).write([], "a comedy", ["2"])
    assert r.preference_source == "none" and r.template_id == "P0-I1-T3-0" and not gen.prompts


@pytest.mark.parametrize(
    ("history", "query", "candidates", "field"),
    [
        (["1"], "", [], "candidate_item_ids"),
        (["1"], "", ["2", "2"], "candidate_item_ids"),
        (["1"], "", ["nope"], "candidate_item_ids"),
        (["nope"], "", ["2"], "history_item_ids"),
        (["1"], "x" * 101, ["2"], "query"),
        (["1"], "", [str(i) for i in range(21)], "candidate_item_ids"),
    ],
)
async def test_invalid_input_names_the_field(history, query, candidates, field):
    with pytest.raises(InvalidArgument, match=field):
        await writer(Generator()).write(history, query, candidates)


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [
        ("Likes comedies. They also liked the 1996", "Likes comedies."),
        ("  Likes\n comedies!  ", "Likes comedies!"),
        ("no sentence end at all", "no sentence end at all"),
    ],
)
def test_statements_are_cut_after_the_last_complete_sentence(raw, tidy):
    assert tidy_statement(raw) == tidy
