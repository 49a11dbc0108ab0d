"""The fixed inputs of the parity checks and of the canary inference a push runs on Triton."""

from __future__ import annotations

from typing import Any

from services.core import prompts
from services.core.catalog import Item, item_text
from services.core.contracts import PREFERENCE_GENERATOR, RANKER, REQUEST_READER, TEXT_ENCODER, TRITON_CONTRACTS
from tools.export.parity import FP32

_SAMPLE_ITEMS = (
    Item("50", "Star Wars", 1977, ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    Item("100", "Fargo", 1996, ("Crime", "Drama", "Thriller")),
    Item("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy")),
    Item("181", "Return of the Jedi", 1983, ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    Item("258", "Contact", 1997, ("Drama", "Sci-Fi")),
    Item("127", "Godfather, The", 1972, ("Action", "Crime", "Drama")),
    Item("286", "English Patient, The", 1996, ("Drama", "Romance", "War")),
    Item("294", "Liar Liar", 1997, ("Comedy",)),
    Item("7", "Twelve Monkeys", 1995, ("Drama", "Sci-Fi")),
    Item("12", "Usual Suspects, The", 1995, ("Crime", "Thriller")),
    Item("56", "Pulp Fiction", 1994, ("Crime", "Drama")),
    Item("64", "Shawshank Redemption, The", 1994, ("Drama",)),
    Item("71", "Lion King, The", 1994, ("Animation", "Children's", "Musical")),
    Item("98", "Silence of the Lambs, The", 1991, ("Drama", "Thriller")),
    Item("121", "Independence Day (ID4)", 1996, ("Action", "Sci-Fi", "War")),
    Item("174", "Raiders of the Lost Ark", 1981, ("Action", "Adventure")),
    Item("204", "Back to the Future", 1985, ("Comedy", "Sci-Fi")),
    Item("313", "Titanic", 1997, ("Action", "Drama", "Romance")),
    Item("288", "Scream", 1996, ("Horror", "Thriller")),
    Item("69", "Forrest Gump", 1994, ("Comedy", "Romance", "War")),
    Item("82", "Jurassic Park", 1993, ("Action", "Adventure", "Sci-Fi")),
    Item("423", "E.T. the Extra-Terrestrial", 1982, ("Children's", "Drama", "Fantasy", "Sci-Fi")),
    Item("22", "Braveheart", 1995, ("Action", "Drama", "War")),
    Item("95", "Aladdin", 1992, ("Animation", "Children's", "Comedy", "Musical")),
)
# The int8 ranker's extra parity prompts: (query, has a preference), each over a full candidate list.
_INT8_QUERIES = (("a funny movie for tonight", True), ("something to watch with the kids", False), ("", True),
                 ("", False))


def sample_texts() -> list[str]:
    """Item texts of different lengths, as the index build encodes them."""
    return [item_text(i) for i in _SAMPLE_ITEMS[:5]] + ["a quiet film about space exploration"]


def sample_prompts() -> list[str]:
    """Ranker instructions of different lengths, rendered from the served templates."""
    items = list(_SAMPLE_ITEMS)
    return [
        prompts.render_instruction(prompts.TEMPLATES_BY_ID["P0-I0-T3-0"], history=[], candidates=items[:3]),
        prompts.render_instruction(
            prompts.TEMPLATES_BY_ID["P1-I0-T3-0"], history=items[:4], candidates=items[4:]
        ),
        prompts.render_instruction(
            prompts.TEMPLATES_BY_ID["P2-I1-T3-0"],
            history=items[2:],
            candidates=items[:5],
            query="something funny",
            preference="Likes science fiction and crime dramas from the seventies.",
        ),
    ]


def _full_list_prompt(i: int, query: str, has_preference: bool) -> tuple[str, int]:
    shift = 5 * i + 1
    rotated = list(_SAMPLE_ITEMS[shift:] + _SAMPLE_ITEMS[:shift])
    history, candidates = rotated[20:], rotated[:20]
    template = prompts.select_template(has_history=True, has_preference=has_preference, has_query=bool(query))
    prompt = prompts.render_instruction(
        template, history=history, candidates=candidates, query=query,
        preference="Enjoys adventurous blockbusters and clever crime stories.",
    )
    return prompt, len(candidates)


def parity_prompts(precision: str) -> list[tuple[str, int]]:
    """Ranker parity inputs, each with its number of candidates.

    fp32 is held to a tight max-abs bound, which three sample prompts check. int8 is judged by ranking
    agreement (top-1, top-k over each prompt's candidates, the labels serving reads), so it gets four more
    prompts with full 20-candidate lists. Each long prompt costs about 2 s of torch on two cores with
    SmolLM2-135M, which is why fp32 does without them.

    Args:
        precision: ``fp32`` or ``int8``.
    """
    rows = list(zip(sample_prompts(), [3, 4, 5]))
    if precision == FP32:
        return rows
    return rows + [_full_list_prompt(i, query, pref) for i, (query, pref) in enumerate(_INT8_QUERIES)]


def canary_inputs() -> dict[str, str]:
    """The fixed input of each model's canary inference after a push."""
    return {
        TEXT_ENCODER: sample_texts()[0],
        RANKER: sample_prompts()[2],
        PREFERENCE_GENERATOR: prompts.render_preference_prompt(list(_SAMPLE_ITEMS[:6])),
        REQUEST_READER: sample_requests()[0],
    }


def sample_requests() -> list[str]:
    """Requests of different lengths and constructs, for the reader's parity check."""
    return ["a comedy from the 80s, but nothing romantic, a bit like Toy Story",
            "anything except dramas", "sci-fi or horror made before 1970",
            "hey, could you find me something cozy for a rainy night? not too long, please, and no musicals"]


def sample_histories(vocab: list[str]) -> list[list[str]]:
    """Item histories of a sequence model's vocabulary for its parity check: short, long (past the model's
    length), one item, and several lengths in between, so padding and truncation are both exercised."""
    n = len(vocab)
    return [vocab[: min(5, n)], vocab[-min(80, n):], vocab[n // 2: n // 2 + 1], vocab[1: min(13, n)][::-1],
            vocab[n // 3: n // 3 + min(30, n)]]


def canary(name: str, expected: Any, tolerance: float | None, *, model_input: Any = None) -> dict[str, Any]:
    """The canary spec stored in ``metadata.json``: the fixed input and what this export answered for it.

    ``tools/export/push.py`` sends it to Triton after loading the version; ``expected`` ``None`` checks only that
    an answer comes.
    """
    contract = TRITON_CONTRACTS[name]
    return {
        "input_name": contract.input_name,
        "input": canary_inputs()[name] if model_input is None else model_input,
        "output_name": contract.output_name,
        "expected": None if expected is None else [float(x) for x in expected],
        "tolerance": None if expected is None else tolerance,
    }
