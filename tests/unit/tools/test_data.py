"""Data preparation: leave-one-out rules, formats round-trip, validation, atomic and idempotent output."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from services.core.catalog import (
    Catalog,
    DataFormatError,
    Interaction,
    Item,
    read_interactions,
    user_sequences,
    write_interactions,
)
from tools import data
from tools.data import (
    atomic_output_dir,
    movielens_item,
    prepare_custom,
    prepare_movielens,
    read_typed_tsv,
    split_leave_one_out,
)

REPO = Path(__file__).resolve().parents[3]


def _ix(user: str, item: str, ts: float, rating: float | None = None) -> Interaction:
    return Interaction(user, item, ts, rating)


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _catalog(n: int = 6) -> Catalog:
    return Catalog({str(i): Item(str(i), f"Movie {i}", 1990 + i, ("Drama",)) for i in range(1, n + 1)})


# ---------------------------------------------------------------- split rules


def test_split_takes_last_by_timestamp_not_file_order() -> None:
    rows = [_ix("u", "a", 30), _ix("u", "b", 10), _ix("u", "c", 40), _ix("u", "d", 20)]
    train, valid, test = split_leave_one_out(rows)
    assert [r.item_id for r in test] == ["c"]
    assert [r.item_id for r in valid] == ["a"]
    assert [r.item_id for r in train] == ["b", "d"]


def test_split_breaks_timestamp_ties_by_file_order(tmp_path: Path) -> None:
    # User u: items x, y, z share the latest timestamp; the one latest in the file is "last".
    path = _write_csv(
        tmp_path / "inter.csv",
        "user_id,item_id,timestamp\n"
        "u,x,100\n"
        "v,p,5\n"
        "u,y,100\n"
        "u,w,50\n"
        "v,q,5\n"
        "u,z,100\n"
        "v,r,5\n"
        "v,s,1\n",
    )
    train, valid, test = split_leave_one_out(read_interactions(path))
    assert {r.user_id: r.item_id for r in test} == {"u": "z", "v": "r"}
    assert {r.user_id: r.item_id for r in valid} == {"u": "y", "v": "q"}
    assert [(r.user_id, r.item_id) for r in train] == [("u", "x"), ("v", "p"), ("u", "w"), ("v", "s")]


def test_split_agrees_with_serving_sequences(tmp_path: Path) -> None:
    """The held-out items are what follows the training history under the serving loader's ordering."""
    rows = [_ix(u, f"i{j % 7}", float(j // 3), None) for j in range(60) for u in ("a", "b")]
    train, valid, test = split_leave_one_out(rows)
    full = user_sequences(rows)
    train_seq = user_sequences(train)
    for u, seq in full.items():
        assert train_seq[u] == seq[:-2]
        assert [r for r in valid if r.user_id == u] == [seq[-2]]
        assert [r for r in test if r.user_id == u] == [seq[-1]]


def test_split_keeps_short_histories_in_train_and_is_a_partition() -> None:
    rows = [_ix("one", "a", 1), _ix("two", "a", 1), _ix("two", "b", 2), _ix("three", "a", 1),
            _ix("three", "b", 2), _ix("three", "c", 3), _ix("three", "c", 3)]
    train, valid, test = split_leave_one_out(rows)
    assert {r.user_id for r in valid} == {r.user_id for r in test} == {"three"}
    assert [r.user_id for r in train].count("one") == 1
    assert [r.user_id for r in train].count("two") == 2
    # Identical repeated rows are distinct events: one is test, one is valid.
    assert test == [_ix("three", "c", 3)] and valid == [_ix("three", "c", 3)]
    assert len(train) + len(valid) + len(test) == len(rows)
    assert sorted(map(repr, train + valid + test)) == sorted(map(repr, rows))


def test_split_of_nothing_is_empty() -> None:
    assert split_leave_one_out([]) == ([], [], [])


# ---------------------------------------------------------------- custom data


def _custom_files(tmp_path: Path) -> tuple[Path, Path, Catalog, list[Interaction]]:
    catalog = _catalog()
    catalog.items["7"] = Item("7", "Café, Le", None, ())
    rows = [_ix("u1", str(1 + j % 6), 1000 + j, 4.0 if j % 2 else None) for j in range(8)]
    rows += [_ix("u2", "7", 5.5), _ix("u2", "1", 6), _ix("u2", "2", 6)]
    cat_path, inter_path = tmp_path / "in" / "items.jsonl", tmp_path / "in" / "inter.csv"
    catalog.save(cat_path)
    write_interactions(inter_path, rows)
    return cat_path, inter_path, catalog, rows


def test_prepare_custom_round_trips_formats_and_writes_stats(tmp_path: Path) -> None:
    cat_path, inter_path, catalog, rows = _custom_files(tmp_path)
    out = prepare_custom(cat_path, inter_path, tmp_path / "out")
    assert Catalog.load(out / "items.jsonl").items == catalog.items
    assert read_interactions(out / "interactions.csv") == rows
    train, valid, test = (read_interactions(out / n) for n in ("train.csv", "valid.csv", "test.csv"))
    assert (train, valid, test) == split_leave_one_out(rows)
    assert {r.user_id: r.item_id for r in test} == {"u1": "2", "u2": "2"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_items"] == 7 and stats["num_users"] == 2 and stats["num_interactions"] == 11
    assert (stats["train"], stats["valid"], stats["test"]) == (7, 2, 2)
    assert stats["source"]["kind"] == "custom"


def test_prepare_custom_is_deterministic_and_replaces_the_folder(tmp_path: Path) -> None:
    cat_path, inter_path, _, _ = _custom_files(tmp_path)
    out = tmp_path / "out"
    prepare_custom(cat_path, inter_path, out)
    (out / "stray.txt").write_text("left over from an older run")
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "stray.txt"}
    prepare_custom(cat_path, inter_path, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temporary folders left


ITEM_A = '{"item_id": "1", "title": "A"}\n'
HEADER = "user_id,item_id,timestamp\n"


@pytest.mark.parametrize(
    ("catalog_text", "interactions_text", "message"),
    [
        (ITEM_A, HEADER + "u,9,1\n", "missing from the catalog"),
        (ITEM_A, "user_id,item,timestamp\nu,1,1\n", "missing columns"),
        (ITEM_A, HEADER + "u,1,yesterday\n", ":2:"),
        (ITEM_A, HEADER + "u,1,nan\n", "finite"),
        (ITEM_A, HEADER + ",1,1\n", "non-empty"),
        (ITEM_A, HEADER, "no interactions"),
        ("", HEADER + "u,1,1\n", "no items"),
        (ITEM_A + '{"item_id": "1", "title": "B"}\n', HEADER, "duplicate item_id"),
        ('{"item_id": "1"}\n', HEADER + "u,1,1\n", "'title'"),
        ('{"item_id": "1", "title": "  "}\n', HEADER + "u,1,1\n", "non-empty"),
        ('{"item_id": "1", "title": null}\n', HEADER + "u,1,1\n", "'title' must be a non-empty string, got None"),
        ('{"item_id": "1", "title": "A", "year": "soon"}\n', HEADER + "u,1,1\n", ":1:"),
        ("not json\n", HEADER + "u,1,1\n", ":1:"),
    ],
)
def test_prepare_custom_rejects_bad_data_and_keeps_previous_output(
    tmp_path: Path, catalog_text: str, interactions_text: str, message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    cat = _write_csv(tmp_path / "items.jsonl", catalog_text)
    inter = _write_csv(tmp_path / "inter.csv", interactions_text)
    with pytest.raises(DataFormatError, match=message):
        prepare_custom(cat, inter, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inter.csv", "items.jsonl", "out"]


def test_atomic_output_dir_leaves_nothing_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output_dir(tmp_path / "new") as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- MovieLens conversion


def test_read_typed_tsv_strips_types() -> None:
    rows = read_typed_tsv(b"a:token\tb:token_seq\n1\tx y\n\n2\tz\n")
    assert rows == [{"a": "1", "b": "x y"}, {"a": "2", "b": "z"}]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"item_id": "1", "movie_title": "Toy Story", "release_year": "1995", "class": "Animation Children's Comedy"},
         Item("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy"))),
        ({"item_id": "1412", "movie_title": "Land Before Time III (1995)", "release_year": "V", "class": "Animation"},
         Item("1412", "Land Before Time III", 1995, ("Animation",))),
        ({"item_id": "267", "movie_title": "unkonwn", "release_year": "unkonwn", "class": "unknown"},
         Item("267", "unkonwn", None, ())),
    ],
)
def test_movielens_item(row: dict, expected: Item) -> None:
    assert movielens_item(row) == expected


def _fake_wheel(path: Path) -> None:
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    item += "".join(f"{i}\tFilm {i}, The\t199{i}\tDrama Crime\n" for i in range(1, 5))
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter += "".join(f"{u}\t{i}\t{i}\t{880000000 + 10 * i + (u == 2)}\n" for u in (1, 2) for i in range(1, 5))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.item", item)
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", inter)


def test_prepare_movielens_from_cached_wheel_and_skips_when_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    _fake_wheel(cache / data.RECBOLE_WHEEL)
    digest = hashlib.sha256((cache / data.RECBOLE_WHEEL).read_bytes()).hexdigest()
    monkeypatch.setattr(data, "RECBOLE_WHEEL_SHA256", digest)
    out = prepare_movielens(tmp_path / "ml", cache)
    catalog = Catalog.load(out / "items.jsonl")
    assert catalog["2"] == Item("2", "Film 2, The", 1992, ("Drama", "Crime"))
    rows = read_interactions(out / "interactions.csv")
    assert len(rows) == 8 and rows[0] == Interaction("1", "1", 880000010.0, 1.0)
    assert [r.item_id for r in read_interactions(out / "test.csv")] == ["4", "4"]
    stamp = (out / "stats.json").stat().st_mtime_ns

    def no_fetch(_: Path) -> Path:
        raise AssertionError("a complete data set must not be rebuilt")

    monkeypatch.setattr(data, "fetch_recbole_wheel", no_fetch)
    assert prepare_movielens(tmp_path / "ml", cache) == out
    assert (out / "stats.json").stat().st_mtime_ns == stamp


def test_fetch_rejects_a_wheel_with_the_wrong_hash(tmp_path: Path) -> None:
    (tmp_path / data.RECBOLE_WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(RuntimeError, match="SHA-256"):
        data.fetch_recbole_wheel(tmp_path)


@pytest.mark.skipif(not (REPO / "var/cache" / data.RECBOLE_WHEEL).exists(), reason="recbole wheel not cached")
def test_real_movielens_counts(tmp_path: Path) -> None:
    out = prepare_movielens(tmp_path / "ml", REPO / "var/cache")
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["num_interactions"], stats["num_items"], stats["num_users"]) == (100_000, 1_682, 943)
    assert (stats["train"], stats["valid"], stats["test"]) == (98_114, 943, 943)
