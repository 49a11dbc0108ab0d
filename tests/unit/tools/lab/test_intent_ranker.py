"""The intent ranker's residual scorer starts exactly at the retrieval order and a few steps on a toy task move it.

The scorer is ``fused + head(LM states at each candidate's last token)`` with the head's output layer at zero:
before any step the scores equal the fused retrieval scores bit for bit. The toy task: ten candidates with
random fused scores, the right one the only Western; a few steps of the real residual (frozen tiny LM, and one
trainable top layer over cached lower states) must lift held-out HR@1 well above what the fused order gets.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from services.core.catalog import Catalog, Item
from tools.core.base_models import smollm2_tokenizer_dir
from tools.lab.frozen_lm import FrozenLM
from tools.lab.intent_ranker_data import IntentRankerConfig, ListExample
from tools.lab.intent_ranker_eval import list_rank
from tools.lab.intent_ranker_features import TextFeatures, lm_features
from tools.lab.intent_ranker_model import LMResidual, TextResidual, residual_scores
from tools.tiny_models import build_tiny_lm

ROOT = Path(__file__).resolve().parents[4]
GENRES = ("Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller")
K = 10


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("lm"), smollm2_tokenizer_dir(ROOT / "var"))


@pytest.fixture(autouse=True)
def _restore_torch_state():
    states = torch.get_rng_state(), torch.get_num_threads()
    yield
    torch.set_rng_state(states[0])
    torch.set_num_threads(states[1])


def toy_catalog() -> Catalog:
    rng = random.Random(0)
    items = {}
    for n in range(60):
        genre = "Western" if n < 15 else rng.choice(GENRES)
        items[str(n)] = Item(str(n), f"Film {n}", 1950 + n % 50, (genre,))
    return Catalog(items=items)


def toy_lists(catalog: Catalog, count: int, seed: int) -> list[ListExample]:
    rng = random.Random(seed)
    westerns = [i for i, item in catalog.items.items() if item.genres == ("Western",)]
    others = [i for i in catalog.items if i not in westerns]
    out = []
    for _ in range(count):
        target = rng.choice(westerns)
        candidates = [target, *rng.sample(others, K - 1)]
        rng.shuffle(candidates)
        history = tuple(rng.sample(others, 3))
        out.append(ListExample("u", history, target, "I1", "a dusty one", candidates,
                               [rng.gauss(0, 1) for _ in candidates], [0.0] * K, candidates.index(target)))
    return out


def hr1(scores: list[list[float]], examples: list[ListExample]) -> float:
    return sum(list_rank(s, e.answer) == 0 for s, e in zip(scores, examples)) / len(examples)


@pytest.mark.parametrize("top_layers,read_layers", [(0, (1,)), (1, (1,))])
def test_residual_starts_at_the_retrieval_order_and_learns_a_toy_task(tiny_lm: Path, top_layers: int,
                                                                      read_layers: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    catalog = toy_catalog()
    config = IntentRankerConfig(top_layers=top_layers, read_layers=read_layers, lr=3e-3, layer_lr=1e-3)
    lm = FrozenLM(tiny_lm, config.top_layers, config.read_layers, torch.device("cpu"))
    assert not hasattr(lm.model, "lm_head")  # the decoder alone: no vocabulary projection is ever computed
    train, held_out = toy_lists(catalog, 96, 1), toy_lists(catalog, 48, 2)
    train_f = lm_features(lm, catalog, train, 3, 16)
    held_f = lm_features(lm, catalog, held_out, 3, 16)
    model = LMResidual(lm, config)
    assert model.trains_layers == (top_layers > 0)

    def scores(examples, features) -> list[list[float]]:
        model.eval()
        with torch.no_grad():
            fused = torch.tensor([e.fused for e in examples])
            out = model(fused, features, list(range(len(examples)))).tolist()
        model.train()
        return out

    # Zero-initialised output layer: exactly the fused retrieval scores, hence exactly the retrieval order.
    fused = torch.tensor([e.fused for e in held_out])
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(fused, held_f, list(range(len(held_out)))), fused)
    before = hr1(scores(held_out, held_f), held_out)
    assert before == hr1([e.fused for e in held_out], held_out)

    params = [{"params": list(model.head.parameters()), "lr": config.lr}]
    if model.trains_layers:
        params.append({"params": list(model.top.parameters()), "lr": config.layer_lr})
    optimizer = torch.optim.AdamW(params)
    losses = []
    for step in range(60):
        rows = [(step * 16 + j) % len(train) for j in range(16)]
        logits = model(torch.tensor([train[r].fused for r in rows]), train_f, rows)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([train[r].answer for r in rows]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    moved = scores(held_out, held_f)
    assert moved != [e.fused for e in held_out]  # the residual is no longer zero
    assert sum(losses[-6:]) < sum(losses[:6]), losses  # and it fits the training lists better
    if top_layers:
        # A trainable layer can attend from each candidate's last token back to its genre: it learns the toy.
        # (The frozen random tiny LM's state at the closing "]" barely encodes the genre, so only the fit is
        # asserted for it; the real LM's frozen states are judged on validation by the trainer.)
        after = hr1(moved, held_out)
        assert after >= before + 0.3 and after >= 0.6, (before, after)


def test_the_minilm_comparator_starts_at_the_retrieval_order() -> None:
    torch.manual_seed(0)
    config = IntentRankerConfig()
    model = TextResidual(8, config).eval()
    features = TextFeatures(torch.randn(4, 8), torch.randn(4, 8), torch.randn(20, 8), torch.randint(0, 20, (4, K)))
    fused = torch.randn(4, K)
    with torch.no_grad():
        assert torch.equal(model(fused, features, [0, 1, 2, 3]), fused)
        assert torch.equal(residual_scores(fused, model.head, [torch.zeros(4, K, 8)] * 3), fused)


def test_distillation_adds_the_teachers_list_order_and_nothing_when_the_scorer_matches_it() -> None:
    from tools.lab.intent_ranker_model import list_loss

    teacher = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    answers = torch.tensor([0])
    plain = IntentRankerConfig()
    distilled = IntentRankerConfig(distil=2.0, distil_temperature=1.0)
    ce = torch.nn.functional.cross_entropy(teacher, answers)
    assert torch.allclose(list_loss(teacher, answers, teacher, plain), ce)
    assert torch.allclose(list_loss(teacher, answers, teacher, distilled), ce)  # KL(p || p) = 0
    flat = torch.zeros(1, 4)
    assert list_loss(flat, answers, teacher, distilled) > list_loss(flat, answers, None, distilled)


def test_random_lists_are_judged_against_popularity_and_the_sequence_model_on_the_same_lists() -> None:
    from tools.eval.intentions import StringFilter
    from tools.lab.intent_ranker_eval import RANDOM_METHODS, evaluate

    catalog = toy_catalog()
    config = IntentRankerConfig(lists="random")
    assert config.names() == {"lm": "LM alone", "minilm": "MiniLM alone", "base": "popularity (list)"}
    rng = random.Random(3)
    val = []
    for n in range(6):
        candidates = rng.sample(list(catalog.items), K)
        target = candidates[n % K]
        popularity = [float(K - j) for j in range(K)]  # the first candidate is the most popular
        val.append(ListExample(str(n), (), target, "I0", "", candidates, [0.0] * K, [0.0] * K,
                               candidates.index(target), teacher=[0.0] * K, popularity=popularity))

    class Zero(torch.nn.Module):
        def forward(self, fused, features, rows):
            return torch.zeros(len(rows), K)

    table, per_user = evaluate(Zero(), Zero(), val, None, None, StringFilter(catalog), torch.device("cpu"),
                               alone=True)
    assert set(table["I0"]) == set(RANDOM_METHODS) | {"target in list"}
    assert per_user["I0"]["popularity (list)"]["HR@1"].tolist() == [1.0, 0, 0, 0, 0, 0]  # its target came first
    assert table["I0"]["LM alone"]["HR@1"] == 0.0  # all scores tied: no credit for a tie
