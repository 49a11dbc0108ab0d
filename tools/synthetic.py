"""Synthetic shop catalogs and interaction logs, in the documented formats (docs/custom-data.md).

What is generated, so the whole pipeline (prepare-data, the sequence model, the indexes, the served stack) has
realistic work at any size:

* items with a categorical attribute (``category``), a second one tied to it (``brand``: each brand sells in a few
  categories), a numeric one (``price``, log-normal per category) and a multi-valued one (``colors``); titles
  made of the brand, a descriptive word and the category's noun;
* skewed popularity (Zipf over a random order of the items) and skewed history lengths (log-normal, at least
  3 so that every user has a training, a validation and a test item);
* sequential structure the sequence model can learn: each user has favourite categories and brands, and the
  next purchase tends to stay in the category of the last one or follow it (shoes, then socks).

Deterministic for a seed. ``instructrec synthesize`` writes ``items.jsonl``, ``interactions.csv`` and a
``synonyms.json`` for the request reader; ``examples/shop`` in the repository is one such output.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# category -> (nouns, median price); the categories follow one another in this order more often than not.
CATEGORIES: dict[str, tuple[tuple[str, ...], float]] = {
    "running shoes": (("Runner", "Trainer", "Racer"), 110.0),
    "socks": (("Socks", "Crew Socks", "Ankle Socks"), 12.0),
    "rain jackets": (("Shell", "Rain Jacket", "Parka"), 140.0),
    "backpacks": (("Daypack", "Backpack", "Pack"), 80.0),
    "water bottles": (("Bottle", "Flask", "Tumbler"), 25.0),
    "tents": (("Tent", "Shelter", "Bivy"), 260.0),
    "sleeping bags": (("Sleeping Bag", "Quilt", "Mummy Bag"), 180.0),
    "headlamps": (("Headlamp", "Torch", "Lamp"), 40.0),
    "tennis shoes": (("Court Shoe", "Tennis Shoe", "Clay Shoe"), 95.0),
    "tennis rackets": (("Racket", "Racquet", "Frame"), 160.0),
    "yoga mats": (("Yoga Mat", "Mat", "Travel Mat"), 45.0),
    "fitness trackers": (("Tracker", "Band", "Watch"), 150.0),
}
SYNONYMS = {
    "sneakers": ["category=running shoes"], "runners": ["category=running shoes"],
    "raincoat": ["category=rain jackets"], "rain coat": ["category=rain jackets"],
    "rucksack": ["category=backpacks"], "flask": ["category=water bottles"],
    "torch": ["category=headlamps"], "racquet": ["category=tennis rackets"],
    "smartwatch": ["category=fitness trackers"], "camping": ["category=tents", "category=sleeping bags"],
}
BRANDS = ("Nordpeak", "Velo", "Aster", "Kestrel", "Granite", "Lumen", "Tidal", "Orbit", "Fjell", "Summit Co",
          "Brisk", "Alder", "Cobalt", "Drift", "Ember", "Falcon", "Glacier", "Harbor", "Iris", "Juniper",
          "Kodo", "Lynx", "Mesa", "Nimbus", "Onyx", "Pioneer", "Quill", "Ridge", "Sable", "Terra")
WORDS = ("Trail", "Ultra", "Light", "Pro", "Classic", "Storm", "Air", "Peak", "Flex", "Core", "Swift", "Eco",
         "Alpine", "Urban", "Tempo", "Vista")
COLORS = ("black", "white", "red", "blue", "green", "grey", "orange", "yellow")


@dataclass(frozen=True)
class ShopSpec:
    """Sizes and shape of one synthetic data set."""

    items: int = 400
    users: int = 600
    mean_history: float = 20.0
    """Mean interactions per user (log-normal; at least 3 each)."""
    zipf: float = 1.0
    """Exponent of item popularity (rank ** -zipf)."""
    seed: int = 0


class Shop:
    """A generated catalog (item arrays) and the means to draw users' histories from it."""

    def __init__(self, spec: ShopSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.categories = list(CATEGORIES)
        n_cat = len(self.categories)
        brand_categories = {b: rng.choice(n_cat, size=3, replace=False) for b in BRANDS}
        self.category = rng.integers(0, n_cat, spec.items)
        self.brand = np.array([rng.choice([b for b in range(len(BRANDS)) if c in brand_categories[BRANDS[b]]])
                               if spec.items <= 100_000 else rng.integers(0, len(BRANDS))
                               for c in self.category])
        medians = np.array([CATEGORIES[c][1] for c in self.categories])
        self.price = np.round(medians[self.category] * rng.lognormal(0.0, 0.35, spec.items), 2)
        popularity = np.empty(spec.items)
        popularity[rng.permutation(spec.items)] = np.arange(1, spec.items + 1, dtype=float) ** -spec.zipf
        self.popularity = popularity
        self._rng = rng
        # Per category: its items and their cumulative popularity (for drawing by popularity).
        self._by_category = []
        for c in range(n_cat):
            members = np.flatnonzero(self.category == c)
            weights = popularity[members]
            self._by_category.append((members, np.cumsum(weights) / weights.sum()))

    def item_lines(self) -> Iterator[dict]:
        """The catalog's JSON Lines records."""
        rng = np.random.default_rng(self.spec.seed + 1)
        for n in range(self.spec.items):
            category = self.categories[self.category[n]]
            nouns = CATEGORIES[category][0]
            title = f"{BRANDS[self.brand[n]]} {WORDS[rng.integers(len(WORDS))]} {nouns[rng.integers(len(nouns))]}"
            colors = sorted(set(rng.choice(COLORS, size=int(rng.integers(1, 4))).tolist()))
            yield {"item_id": f"p{n}", "title": f"{title} {int(rng.integers(1, 10))}", "category": category,
                   "brand": BRANDS[self.brand[n]], "price": float(self.price[n]), "colors": colors}

    def _draw(self, category: int, rng: np.random.Generator, brand: int | None) -> int:
        members, cumulative = self._by_category[category]
        for _ in range(3):  # a favourite brand is tried first, then any item of the category
            item = int(members[np.searchsorted(cumulative, rng.random())])
            if brand is None or self.brand[item] == brand:
                return item
        return item

    def interactions(self) -> Iterator[tuple[str, str, int, int]]:
        """``(user_id, item_id, timestamp, rating)`` rows, user by user, each user's in time order."""
        spec = self.spec
        rng = np.random.default_rng(spec.seed + 2)
        n_cat = len(self.categories)
        sigma = 0.8
        mu = np.log(max(spec.mean_history - 3, 1.0)) - sigma ** 2 / 2
        for u in range(spec.users):
            length = 3 + int(rng.lognormal(mu, sigma))
            favourites = rng.choice(n_cat, size=int(rng.integers(1, 4)), replace=False)
            brand = int(rng.integers(len(BRANDS))) if rng.random() < 0.5 else None
            t = int(1_600_000_000 + rng.integers(0, 20_000_000))
            category = int(rng.choice(favourites))
            seen: set[int] = set()
            for _ in range(length):
                roll = rng.random()
                if roll < 0.35:
                    category = (category + 1) % n_cat  # what usually comes next (shoes, then socks)
                elif roll < 0.75:
                    category = int(rng.choice(favourites))
                elif roll < 0.85:
                    category = int(rng.integers(n_cat))
                item = self._draw(category, rng, brand)
                if item in seen:
                    continue
                seen.add(item)
                t += int(rng.integers(3_600, 14 * 86_400))
                yield str(u + 1), f"p{item}", t, int(rng.integers(3, 6))


def write_shop(out_dir: Path, spec: ShopSpec = ShopSpec()) -> dict[str, int]:
    """Write ``items.jsonl``, ``interactions.csv`` and ``synonyms.json`` into ``out_dir``.

    Returns:
        Counts: items, users, interactions.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shop = Shop(spec)
    with open(out_dir / "items.jsonl", "w", encoding="utf-8") as f:
        for line in shop.item_lines():
            f.write(json.dumps(line) + "\n")
    rows = 0
    with open(out_dir / "interactions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp", "rating"])
        for row in shop.interactions():
            writer.writerow(row)
            rows += 1
    (out_dir / "synonyms.json").write_text(json.dumps(SYNONYMS, indent=2) + "\n")
    return {"items": spec.items, "users": spec.users, "interactions": rows}
