"""Data preparation: MovieLens-100K (from the recbole wheel) or a team's own files -> our formats + split.

Output folder (see ``docs/architecture.md``)::

    items.jsonl        catalog (services.core.catalog format)
    interactions.csv   every interaction, input row order
    train.csv          leave-one-out training split (the serving interaction store)
    valid.csv          second-to-last interaction per user
    test.csv           last interaction per user
    stats.json         counts, for reports and sanity checks
    synonyms.json      optional: the words people use for the catalog's values (the request reader's lexicon)

Every output is written to a temporary sibling folder and renamed into place, so a crash never leaves a
half-written data set that later steps would silently read. Outputs are deterministic (no timestamps), so
running a preparation twice produces identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from services.core.catalog import (
    Catalog,
    DataFormatError,
    Interaction,
    Item,
    read_interactions,
    write_interactions,
)
from tools.core.files import atomic_output_dir

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
# Pinned so that a tampered or truncated cached wheel is caught before its data reaches training.
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_ML100K_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"

ITEMS_FILE = "items.jsonl"
SYNONYMS_FILE = "synonyms.json"
MOVIELENS_SYNONYMS = Path(__file__).resolve().parent / "lexicons" / "movielens-100k.json"
INTERACTIONS_FILE = "interactions.csv"
SPLIT_FILES = ("train.csv", "valid.csv", "test.csv")
STATS_FILE = "stats.json"
OUTPUT_FILES = (ITEMS_FILE, INTERACTIONS_FILE, *SPLIT_FILES, STATS_FILE)

# A user needs one training item plus the two held-out ones; shorter histories stay whole in train.
MIN_INTERACTIONS_TO_HOLD_OUT = 3

# MovieLens marks "no genre" with a pseudo-genre; an empty list keeps it out of the item text.
_UNKNOWN_GENRE = "unknown"
_TRAILING_YEAR = re.compile(r"^(?P<title>.*\S)\s+\((?P<year>\d{4})\)$")


def split_leave_one_out(
    rows: Sequence[Interaction],
) -> tuple[list[Interaction], list[Interaction], list[Interaction]]:
    """Leave-one-out split: per user, the last interaction is test and the second-to-last is valid.

    "Last" is by timestamp; interactions with equal timestamps keep their order in ``rows`` (stable sort,
    the same rule as ``services.core.catalog.user_sequences``), so the split is deterministic. Users
    with fewer than ``MIN_INTERACTIONS_TO_HOLD_OUT`` (3) interactions keep all of them in train, because a
    held-out item needs at least one earlier item to be predicted from.

    Each returned list keeps the rows in their input order (not grouped by user), so that the same stable
    sort on a split file reproduces each user's sequence.

    Args:
        rows: Interactions in their original order.

    Returns:
        ``(train, valid, test)``; ``train + valid + test`` is a permutation of ``rows``.
    """
    # Positions, not Interaction objects: identical rows (a repeated event) must stay distinct.
    role = ["train"] * len(rows)
    per_user: dict[str, list[int]] = {}
    for pos, r in enumerate(rows):
        per_user.setdefault(r.user_id, []).append(pos)
    for positions in per_user.values():
        if len(positions) < MIN_INTERACTIONS_TO_HOLD_OUT:
            continue
        positions.sort(key=lambda p: rows[p].timestamp)
        role[positions[-1]] = "test"
        role[positions[-2]] = "valid"
    splits: dict[str, list[Interaction]] = {"train": [], "valid": [], "test": []}
    for pos, r in enumerate(rows):
        splits[role[pos]].append(r)
    return splits["train"], splits["valid"], splits["test"]


def validate_dataset(catalog: Catalog, rows: Sequence[Interaction]) -> None:
    """Check the rules the loaders cannot check line by line.

    Args:
        catalog: The loaded catalog.
        rows: The loaded interactions.

    Raises:
        DataFormatError: empty catalog or interactions, an empty id or title, a non-finite timestamp, or
            interactions that reference items missing from the catalog.
    """
    if not len(catalog):
        raise DataFormatError("the catalog has no items")
    if not rows:
        raise DataFormatError("there are no interactions")
    for item in catalog:
        if not item.item_id.strip() or not item.title.strip():
            raise DataFormatError(f"item {item.item_id!r}: item_id and title must be non-empty")
    unknown: Counter[str] = Counter()
    for line_no, r in enumerate(rows, 2):
        if not r.user_id.strip() or not r.item_id.strip():
            raise DataFormatError(f"interactions line {line_no}: user_id and item_id must be non-empty")
        if not math.isfinite(r.timestamp):
            raise DataFormatError(f"interactions line {line_no}: timestamp must be a finite number")
        if r.item_id not in catalog:
            unknown[r.item_id] += 1
    if unknown:
        examples = ", ".join(repr(i) for i, _ in unknown.most_common(5))
        raise DataFormatError(
            f"{sum(unknown.values())} interactions reference {len(unknown)} item ids missing from the catalog "
            f"(e.g. {examples})"
        )


def dataset_stats(
    catalog: Catalog,
    rows: Sequence[Interaction],
    train: Sequence[Interaction],
    valid: Sequence[Interaction],
    test: Sequence[Interaction],
) -> dict:
    """Counts written to ``stats.json``."""
    users = {r.user_id for r in rows}
    return {
        "num_items": len(catalog),
        "num_users": len(users),
        "num_interactions": len(rows),
        "num_items_with_interactions": len({r.item_id for r in rows}),
        "train": len(train),
        "valid": len(valid),
        "test": len(test),
        "users_held_out": len(test),
        "users_train_only": len(users) - len(test),
        "timestamp_min": min(r.timestamp for r in rows),
        "timestamp_max": max(r.timestamp for r in rows),
    }


def write_dataset(out_dir: Path, catalog: Catalog, rows: Sequence[Interaction], source: dict,
                  synonyms: dict | None = None) -> Path:
    """Split and write a validated data set atomically.

    Args:
        out_dir: Destination folder (replaced as a whole).
        catalog: The catalog.
        rows: All interactions in their original order.
        source: Where the data came from, recorded in ``stats.json``.
        synonyms: Phrases for the catalog's values (``services/core/reading.py``), written as ``synonyms.json``.

    Returns:
        ``out_dir``.
    """
    train, valid, test = split_leave_one_out(rows)
    stats = {"source": source, **dataset_stats(catalog, rows, train, valid, test)}
    with atomic_output_dir(out_dir) as tmp:
        catalog.save(tmp / ITEMS_FILE)
        write_interactions(tmp / INTERACTIONS_FILE, rows)
        for name, split in zip(SPLIT_FILES, (train, valid, test)):
            write_interactions(tmp / name, split)
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        if synonyms is not None:
            (tmp / SYNONYMS_FILE).write_text(json.dumps(synonyms, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out_dir)


def prepare_custom(catalog_path: Path, interactions_path: Path, out_dir: Path,
                   synonyms_path: Path | None = None) -> Path:
    """Validate a team's own catalog and interactions (documented formats) and write the split data set.

    Args:
        catalog_path: Catalog JSON Lines file.
        interactions_path: Interactions CSV (``user_id,item_id,timestamp[,rating]``).
        out_dir: Destination folder, laid out like the MovieLens one.
        synonyms_path: Optional JSON object: phrase -> list of ``attribute=value`` the phrase stands for.

    Returns:
        ``out_dir``.

    Raises:
        DataFormatError: the files do not follow the formats or do not agree with each other.
    """
    catalog = Catalog.load(catalog_path)
    synonyms = read_synonyms(synonyms_path, catalog) if synonyms_path else None
    rows = read_interactions(interactions_path)
    validate_dataset(catalog, rows)
    source = {"kind": "custom", "catalog": str(catalog_path), "interactions": str(interactions_path)}
    return write_dataset(out_dir, catalog, rows, source, synonyms)


def read_synonyms(path: Path, catalog: Catalog, *, strict: bool = True) -> dict:
    """A synonyms file, checked against the catalog: every ``attribute=value`` must exist (``strict``), or pairs
    the catalog lacks are left out (the committed MovieLens file over a partial catalog).

    Raises:
        DataFormatError: not a JSON object of lists, or a pair the catalog does not have.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a readable JSON file: {exc}") from None
    if not isinstance(raw, dict):
        raise DataFormatError(f"{path}: expected a JSON object of phrase -> [attribute=value, ...]")
    known = {(a, v) for item in catalog for a, vs in item.attributes.items()
             for v in ((vs,) if isinstance(vs, str) else vs if isinstance(vs, tuple) else ())}
    for phrase, targets in raw.items():
        if phrase.startswith("_"):
            continue  # comments
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise DataFormatError(f"{path}: {phrase!r} must map to a list of strings")
        kept = [t for t in targets if tuple(t.partition("=")[::2]) in known]
        if strict and len(kept) < len(targets):
            missing = next(t for t in targets if t not in kept)
            raise DataFormatError(f"{path}: {phrase!r} -> {missing!r}: the catalog has no such attribute value")
        raw[phrase] = kept
    return {phrase: targets for phrase, targets in raw.items() if phrase.startswith("_") or targets}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_recbole_wheel(cache_dir: Path) -> Path:
    """The recbole wheel from the cache, downloaded with pip when missing, its hash checked.

    Args:
        cache_dir: Folder that keeps the wheel between runs.

    Returns:
        Path of the wheel.

    Raises:
        RuntimeError: pip could not download it, or the wheel's SHA-256 is not the pinned one.
    """
    cache_dir = Path(cache_dir)
    wheel = cache_dir / RECBOLE_WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Download into a scratch folder so an interrupted download never looks like a cached wheel.
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   f"recbole=={RECBOLE_VERSION}", "-d", scratch]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not (Path(scratch) / RECBOLE_WHEEL).exists():
                raise RuntimeError(f"pip download of recbole=={RECBOLE_VERSION} failed:\n{proc.stderr[-2000:]}")
            (Path(scratch) / RECBOLE_WHEEL).rename(wheel)
    digest = _sha256(wheel)
    if digest != RECBOLE_WHEEL_SHA256:
        raise RuntimeError(f"{wheel} has SHA-256 {digest}, expected {RECBOLE_WHEEL_SHA256}; delete it and retry")
    return wheel


def read_typed_tsv(data: bytes) -> list[dict[str, str]]:
    """Rows of a RecBole atomic file (tab-separated, header ``name:type``), keyed by the bare names."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [h.split(":", 1)[0] for h in next(reader)]
    return [dict(zip(header, row, strict=True)) for row in reader if row]


def movielens_item(raw: dict[str, str]) -> Item:
    """One ``ml-100k.item`` row as a catalog item.

    The year column is not always a year (item 1412 has ``V`` and its year in the title, item 267 has
    ``unkonwn``): a year embedded at the end of the title is used instead, otherwise the year is None.
    """
    title, year_text = raw["movie_title"].strip(), raw["release_year"].strip()
    year = int(year_text) if year_text.isdigit() else None
    if year is None and (m := _TRAILING_YEAR.match(title)):
        title, year = m["title"], int(m["year"])
    genres = tuple(g for g in raw["class"].split() if g != _UNKNOWN_GENRE)
    return Item(item_id=raw["item_id"], title=title, year=year, genres=genres)


def movielens_interaction(raw: dict[str, str]) -> Interaction:
    """One ``ml-100k.inter`` row as an interaction (ratings are kept as side information)."""
    return Interaction(
        user_id=raw["user_id"], item_id=raw["item_id"], timestamp=float(raw["timestamp"]), rating=float(raw["rating"])
    )


def _is_complete(out_dir: Path, source: dict) -> bool:
    try:
        stats = json.loads((out_dir / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stats.get("source") == source and all((out_dir / name).is_file() for name in OUTPUT_FILES)


def prepare_movielens(
    out_dir: Path = Path("var/data/movielens-100k"),
    cache_dir: Path = Path("var/cache"),
    *,
    force: bool = False,
) -> Path:
    """Write MovieLens-100K (read from the recbole wheel, never committed) in our formats, split.

    Skips all work when ``out_dir`` already holds a complete data set from the same source.

    Args:
        out_dir: Destination folder (git-ignored ``var/``).
        cache_dir: Where the recbole wheel is kept.
        force: Rebuild even when ``out_dir`` is complete.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    source = {"kind": "movielens-100k", "package": f"recbole=={RECBOLE_VERSION}", "sha256": RECBOLE_WHEEL_SHA256,
              "synonyms_sha256": _sha256(MOVIELENS_SYNONYMS)}
    if not force and _is_complete(out_dir, source):
        return out_dir
    wheel = fetch_recbole_wheel(cache_dir)
    with zipfile.ZipFile(wheel) as zf:
        items = [movielens_item(raw) for raw in read_typed_tsv(zf.read(_ML100K_PREFIX + ".item"))]
        rows = [movielens_interaction(raw) for raw in read_typed_tsv(zf.read(_ML100K_PREFIX + ".inter"))]
    catalog = Catalog({item.item_id: item for item in items})
    if len(catalog) != len(items):
        raise DataFormatError("ml-100k.item repeats an item_id")
    validate_dataset(catalog, rows)
    return write_dataset(out_dir, catalog, rows, source, read_synonyms(MOVIELENS_SYNONYMS, catalog, strict=False))



def export_dslabs_movielens(out_dir: Path) -> tuple[Path, Path]:
    """MovieLens latest-small (671 users, 9,066 movies, about 100,000 ratings) from Debian's ``r-cran-dslabs``,
    written as a catalog (``items.jsonl``) and interactions (``interactions.csv``) in the documented formats:
    the input of ``instructrec bootstrap`` for a second real data set. Needs ``Rscript`` and the package
    (``apt-get install r-cran-dslabs``); nothing is downloaded.

    Returns:
        The catalog and interactions paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        frame = Path(tmp) / "movielens.csv"
        subprocess.run(["Rscript", "-e", 'data(movielens, package="dslabs"); '
                        f'write.csv(movielens, "{frame}", row.names=FALSE)'], check=True, capture_output=True)
        items: dict[str, dict] = {}
        with open(out_dir / "interactions.csv", "w", newline="", encoding="utf-8") as out, \
                open(frame, newline="", encoding="utf-8") as f:
            writer = csv.writer(out)
            writer.writerow(["user_id", "item_id", "timestamp", "rating"])
            for row in csv.DictReader(f):
                genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
                items.setdefault(row["movieId"], {"item_id": row["movieId"], "title": row["title"],
                                                  "year": int(row["year"]) if row["year"] not in ("", "NA") else None,
                                                  "genres": genres})
                writer.writerow([row["userId"], row["movieId"], row["timestamp"], row["rating"]])
    with open(out_dir / "items.jsonl", "w", encoding="utf-8") as f:
        for item in items.values():
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    return out_dir / "items.jsonl", out_dir / "interactions.csv"


__all__ = [
    "MIN_INTERACTIONS_TO_HOLD_OUT",
    "atomic_output_dir",
    "dataset_stats",
    "export_dslabs_movielens",
    "fetch_recbole_wheel",
    "prepare_custom",
    "prepare_movielens",
    "read_synonyms",
    "split_leave_one_out",
    "validate_dataset",
    "write_dataset",
]


if __name__ == "__main__":  # python -m tools.data dslabs-movielens OUT_DIR
    if sys.argv[1:2] == ["dslabs-movielens"] and len(sys.argv) == 3:
        print(export_dslabs_movielens(Path(sys.argv[2])))
    else:
        sys.exit("usage: python -m tools.data dslabs-movielens OUT_DIR")
