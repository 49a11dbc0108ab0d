"""The ranker's training loop learns a toy task: the answer letter is set by one word of the instruction.

The toy instruction reads like a served T3 one (a request, lettered candidates, the served question): four
random titles in random order, and a colour word in the request that alone decides the right letter (red -> A,
green -> B, ...). Everything else is what ``instructrec train ranker`` runs: LoRA as
``RankerTrainConfig`` sets it, the served chat template and answer prefix, the label-logit scorer, the
cross-entropy over the labels, ``run_loop`` with its validation and best-adapter bookkeeping. The judgement is
validation HR@1 on held-out wordings, not the training loss.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from services.core.prompts import LABELS
from tools.core.base_models import smollm2_tokenizer_dir
from tools.export import RANKER
from tools.tiny_models import build_tiny_lm
from tools.train.common import Record, cycle, run_loop, setup_torch
from tools.train.examples import RankerExample
from tools.train.ranker import RankerTrainConfig, load_ranker_model, ranker_task
from tools.train.run import PRESETS

ROOT = Path(__file__).resolve().parents[4]
COLOURS = (" red", " green", " blue", " yellow")  # COLOURS[i] -> LABELS[i]; one token each, leading space
TITLES = ("Heat (1995)", "Fargo (1996)", "Alien (1979)", "Big (1988)", "Ran (1985)", "Jaws (1975)", "Babe (1995)",
          "Seven (1995)", "Rocky (1976)", "Klute (1971)")
TRAIN_OPENINGS = ("The user asks for a{} movie.", "Looking for: something{}.", "Request: a{} film tonight.",
                  "Right now the user wants a{} one.")
HELD_OUT_OPENINGS = ("Specifically, the user wants{}.", "The user would like a{} film, please.")
CHANCE = 1 / len(COLOURS)


def toy_example(rng: random.Random, openings: tuple[str, ...]) -> RankerExample:
    """Four random titles in random order; the colour word alone says which letter is right."""
    answer = rng.randrange(len(COLOURS))
    candidates = "\n".join(f"{label}. {title}" for label, title in zip(LABELS, rng.sample(TITLES, len(COLOURS))))
    prompt = (rng.choice(openings).format(COLOURS[answer]) + f"\nCandidates:\n{candidates}\n"
              "Answer with the letter of the one movie the user should get next.")
    return RankerExample(prompt, answer, len(COLOURS), "T3", "toy")


# SmolLM2-135M's label rows (" A".." T" of its tied embeddings) have norm 2.2-2.5. The tiny model's random head
# rows have norm ~0.1, which, behind the frozen final norm and the frozen head the scorer reads, caps the label
# logits near +-0.7: a toy task then plateaus at a loss near chance whatever the loop does. The pretrained scale
# removes that artefact of the tiny model.
PRETRAINED_LABEL_ROW_NORM = 2.4


@pytest.fixture(autouse=True)
def _restore_global_torch_state():
    """The loop seeds the global RNGs and sets torch's threads; later tests must not inherit that."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state(), torch.get_num_threads()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    torch.set_num_threads(states[3])


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("lm"), smollm2_tokenizer_dir(ROOT / "var"))


def test_the_ranker_loop_learns_a_toy_task_on_held_out_wordings(tiny_lm: Path, tmp_path: Path) -> None:
    # The default preset's optimiser settings (lr, warm-up, clipping, schedule shape), shortened.
    loop = replace(PRESETS["default"][RANKER]["loop"], steps=200, batch_size=8, eval_every=50, checkpoint_every=200,
                   max_minutes=0, threads=1, seed=0)
    config = RankerTrainConfig(data_dir=tmp_path, base_model=tiny_lm, out_dir=tmp_path / "ranker", loop=loop)
    device = setup_torch(loop)
    model, lm, tokenizer = load_ranker_model(config, device)
    head = lm.get_output_embeddings().weight
    with torch.no_grad():
        head.mul_(PRETRAINED_LABEL_ROW_NORM / head.norm(dim=1, keepdim=True))

    def epoch(n: int) -> list[list[RankerExample]]:
        rng = random.Random(f"toy:{n}")
        examples = [toy_example(rng, TRAIN_OPENINGS) for _ in range(loop.batch_size * 25)]
        return [examples[i: i + loop.batch_size] for i in range(0, len(examples), loop.batch_size)]

    rng = random.Random("toy:validation")
    validation = [toy_example(rng, HELD_OUT_OPENINGS) for _ in range(64)]
    task = ranker_task(model, lm, tokenizer, cycle(epoch), validation, device)
    record = run_loop(task, loop, config.out_dir, Record("ranker-toy", config, config.out_dir / "record.json"))

    curve = [v["HR@1"] for v in record.validations]
    assert record.status == "finished" and [v["step"] for v in record.validations] == [0, 50, 100, 150, 200]
    assert curve[0] < CHANCE + 0.15, curve  # the random model is near chance on the held-out wordings
    assert record.best["HR@1"] >= 0.95 and curve[-1] >= 0.9, curve  # and the loop takes it far above
    assert (config.out_dir / "adapter" / "adapter_model.safetensors").is_file()
