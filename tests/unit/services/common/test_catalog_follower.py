"""Following the catalog file: added items join the served catalog in place and the listeners hear of them; a
file whose items changed or that cannot be read is refused and the catalog kept."""

from __future__ import annotations

import os
from pathlib import Path

from services.common.catalog_follower import CatalogFollower
from services.core.catalog import Catalog, Item
from services.core.filters import AttributeFilter, CatalogAttributes

ITEMS = [Item("1", "Fargo", 1996, ("Crime",)), Item("2", "Heat", 1995, ("Action",))]


def _write(path: Path, items: list[Item], tick: int) -> None:
    Catalog({i.item_id: i for i in items}).save(path)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a new stamp even within one clock tick


def test_added_items_join_the_catalog_in_place_and_listeners_hear(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    _write(path, ITEMS, 1)
    catalog = Catalog.load(path)
    attributes = CatalogAttributes(catalog)
    heard: list[list[str]] = []
    follower = CatalogFollower(path, catalog, poll_s=0, listeners=[
        lambda added: attributes.refresh(), lambda added: heard.append([i.item_id for i in added])])
    assert follower.check() == []  # unchanged file
    new = Item("3", "Casino", 1995, ("Crime", "Drama"))
    _write(path, [*ITEMS, new], 2)
    assert [i.item_id for i in follower.check()] == ["3"]
    assert "3" in catalog and heard == [["3"]] and list(catalog.items) == ["1", "2", "3"]
    assert attributes.eligible([AttributeFilter("genres", values=("Crime",))]) == {"1", "3"}
    assert follower.check() == []


def test_changed_removed_or_unreadable_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    _write(path, ITEMS, 1)
    catalog = Catalog.load(path)
    follower = CatalogFollower(path, catalog, poll_s=0)
    _write(path, [Item("1", "Fargo (director's cut)", 1996, ("Crime",)), ITEMS[1], Item("3", "Casino")], 2)
    assert follower.check() == [] and "3" not in catalog and catalog["1"].title == "Fargo"
    _write(path, [ITEMS[0]], 3)
    assert follower.check() == [] and len(catalog) == 2
    path.write_text('{"item_id": "4", "title": null}\n')
    assert follower.check() == [] and len(catalog) == 2
    _write(path, [*ITEMS, Item("4", "Heat 2")], 5)  # fixed: the next check serves it
    assert [i.item_id for i in follower.check()] == ["4"]
