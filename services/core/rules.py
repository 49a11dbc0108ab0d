"""Business rules: the server's rules file, and one request's policy (filters, blocks, diversity, boosts, pins).

The rules file (JSON, named by ``GATEWAY_RULES_PATH``; docs/business-rules.md gives the format)::

    {
      "version": "2025-06-01.1",
      "blocked_item_ids": ["1373"],
      "blocked_attributes": [{"attribute": "genres", "value_set": {"values": ["Horror"]}}],
      "pinned": [{"item_id": "50", "position": 1}],
      "boosts": [{"item_ids": ["100"], "weight": 0.05},
                 {"attribute": "year", "range": {"min": 1990}, "weight": 0.02}],
      "callers": {"kids-app": {"filters": [{"attribute": "genres", "value_set": {"values": ["Children's"]}}],
                               "diversity": {"attribute": "genres", "max_items_per_value": 3}},
                  "*": {"diversity": {"attribute": "genres", "max_items_per_value": 5}}}
    }

A filter has the shape of the proto's ``AttributeFilter`` in JSON (``attribute``, ``value_set`` with
``values`` and ``match`` ``VALUE_MATCH_ANY``/``VALUE_MATCH_ALL``, or ``range`` with ``min``/``max``, and
``exclude``), so callers and operators write filters one way. Every key is checked: a misspelt key, an
unknown attribute or a pin of an item the catalog does not hold refuses the whole file
(:class:`RulesFormatError`), because a rule silently not applied is worse than an old rule kept.

One request's :class:`Policy` joins the request's filters and diversity with the rules: the caller's
defaults (its entry in ``callers``, else ``"*"``) add filters (AND) and give a diversity rule when the
request has none; blocked items and attribute values are never returned. :meth:`Policy.order` turns the
ranked list into the answer: checks every item again, applies boosts, places pins, keeps the diversity cap
and cuts to ``num_items``, recording what it removed and why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.core.catalog import Catalog
from services.core.errors import InvalidArgument
from services.core.filters import (
    ALL,
    ANY,
    RANGE,
    VALUES,
    AttributeFilter,
    CatalogAttributes,
    DiversityRule,
    FilterLimits,
    diversify,
    first_violation,
)

# Why an item was left out of an answer (RemovedItem.reason in the proto).
REMOVED_FILTER, REMOVED_BLOCKED, REMOVED_DIVERSITY, REMOVED_EXCLUDED = "filter", "blocked", "diversity", "excluded"
SOURCE_REQUEST, SOURCE_RULES, SOURCE_QUERY = "request", "rules", "query"
CALLER_FALLBACK = "*"
# A rules file with more entries than this is refused (it is read on every change and held per process).
MAX_RULE_ENTRIES = 100_000
MAX_PIN_POSITION = 1_000
_MATCHES = {"VALUE_MATCH_UNSPECIFIED": ANY, "VALUE_MATCH_ANY": ANY, "VALUE_MATCH_ALL": ALL, ANY: ANY, ALL: ALL}


class RulesFormatError(ValueError):
    """The rules file is not valid JSON or does not follow the format; the message names the place."""


@dataclass(frozen=True)
class Pin:
    """Put ``item_id`` at ``position`` (1-based) of every answer it is allowed in."""

    item_id: str
    position: int


@dataclass(frozen=True)
class Boost:
    """Add ``weight`` to the score of the items listed or meeting ``condition`` (negative: demote)."""

    weight: float
    item_ids: frozenset[str] = frozenset()
    condition: AttributeFilter | None = None

    def applies(self, item_id: str, catalog: Catalog) -> bool:
        return item_id in self.item_ids or (self.condition is not None and self.condition.meets(catalog[item_id]))

    def describe(self) -> str:
        what = self.condition.describe() if self.condition else "items " + ", ".join(sorted(self.item_ids)[:10])
        return f"boost {self.weight:+g}: {what}"


@dataclass(frozen=True)
class CallerDefaults:
    """What a caller gets unless its request says otherwise: filters always added, diversity when the
    request sets none."""

    filters: tuple[AttributeFilter, ...] = ()
    diversity: DiversityRule | None = None


@dataclass(frozen=True)
class Rules:
    """One version of the server's rules; the empty default has version ``""`` and no rule."""

    version: str = ""
    blocked_item_ids: frozenset[str] = frozenset()
    blocked: tuple[AttributeFilter, ...] = ()  # conditions (exclude mode): items meeting one are never returned
    pins: tuple[Pin, ...] = ()
    boosts: tuple[Boost, ...] = ()
    callers: Mapping[str, CallerDefaults] = field(default_factory=dict, hash=False)

    def for_caller(self, caller_id: str) -> tuple[str, CallerDefaults] | None:
        """The caller's entry (exact id, else ``"*"``) with the key it was found under."""
        if caller_id and caller_id in self.callers:
            return caller_id, self.callers[caller_id]
        if CALLER_FALLBACK in self.callers:
            return CALLER_FALLBACK, self.callers[CALLER_FALLBACK]
        return None


# --- the rules file ------------------------------------------------------------------------------------------


def _expect(value: object, kind: type | tuple[type, ...], where: str, what: str) -> object:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,))):
        raise RulesFormatError(f"{where}: expected {what}, got {json.dumps(value)[:60]}")
    return value


def _keys(raw: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise RulesFormatError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RulesFormatError(f"{where}: expected a finite number, got {json.dumps(value)[:60]}")
    return float(value)


def filter_from_json(raw: object, where: str, *, extra_keys: frozenset[str] = frozenset()) -> AttributeFilter:
    """An :class:`AttributeFilter` from its JSON form (the proto's JSON mapping; ``valueSet`` is read too).

    Raises:
        RulesFormatError: a key is unknown or a value has the wrong type (the attribute is checked later).
    """
    raw = _expect(raw, dict, where, "an object")
    _keys(raw, {"attribute", "value_set", "valueSet", "range", "exclude", *extra_keys}, where)
    attribute = str(_expect(raw.get("attribute", ""), str, f"{where}.attribute", "a string"))
    exclude = bool(_expect(raw.get("exclude", False), bool, f"{where}.exclude", "true or false"))
    value_set = raw.get("value_set", raw.get("valueSet"))
    bounds = raw.get("range")
    if value_set is not None and bounds is not None:
        raise RulesFormatError(f"{where}: set value_set or range, not both")
    if value_set is not None:
        value_set = _expect(value_set, dict, f"{where}.value_set", "an object")
        _keys(value_set, {"values", "match"}, f"{where}.value_set")
        values = _expect(value_set.get("values", []), list, f"{where}.value_set.values", "a list of strings")
        for j, v in enumerate(values):
            _expect(v, str, f"{where}.value_set.values[{j}]", "a string")
        match = value_set.get("match", ANY)
        if match not in _MATCHES:
            raise RulesFormatError(f"{where}.value_set.match: expected VALUE_MATCH_ANY or VALUE_MATCH_ALL, "
                                   f"got {json.dumps(match)[:60]}")
        return AttributeFilter(attribute, VALUES, tuple(values), _MATCHES[match], exclude=exclude)
    if bounds is not None:
        bounds = _expect(bounds, dict, f"{where}.range", "an object")
        _keys(bounds, {"min", "max"}, f"{where}.range")
        lo = _number(bounds["min"], f"{where}.range.min") if "min" in bounds else None
        hi = _number(bounds["max"], f"{where}.range.max") if "max" in bounds else None
        return AttributeFilter(attribute, RANGE, min=lo, max=hi, exclude=exclude)
    return AttributeFilter(attribute, "", exclude=exclude)


def _checked_filter(raw: object, where: str, attributes: CatalogAttributes, limits: FilterLimits,
                    **kwargs) -> AttributeFilter:
    f = filter_from_json(raw, where, **kwargs)
    try:
        attributes.validate_filters([f], limits, where)
    except InvalidArgument as exc:
        raise RulesFormatError(str(exc).replace(f"{where}[0]", where)) from None
    return f


def _diversity_from_json(raw: object, where: str, attributes: CatalogAttributes,
                         limits: FilterLimits) -> DiversityRule:
    raw = _expect(raw, dict, where, "an object")
    _keys(raw, {"attribute", "max_items_per_value"}, where)
    rule = DiversityRule(str(_expect(raw.get("attribute", ""), str, f"{where}.attribute", "a string")),
                         int(_expect(raw.get("max_items_per_value", 0), int, f"{where}.max_items_per_value",
                                     "an integer")))
    try:
        attributes.validate_diversity(rule, limits, where)
    except InvalidArgument as exc:
        raise RulesFormatError(str(exc)) from None
    return rule


def _list(raw: Mapping, key: str) -> list:
    value = _expect(raw.get(key, []), list, key, "a list")
    if len(value) > MAX_RULE_ENTRIES:
        raise RulesFormatError(f"{key}: {len(value)} entries, at most {MAX_RULE_ENTRIES}")
    return value


def parse_rules(raw: object, attributes: CatalogAttributes, limits: FilterLimits = FilterLimits()) -> Rules:
    """Rules from the parsed JSON of a rules file, checked against the catalog's attributes and items.

    Raises:
        RulesFormatError: naming the first problem, e.g. ``pinned[0].item_id: "999" is not in the catalog``.
    """
    catalog = attributes.catalog
    raw = _expect(raw, dict, "rules", "a JSON object")
    _keys(raw, {"version", "description", "blocked_item_ids", "blocked_attributes", "pinned", "boosts",
                "callers"}, "rules")
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, str | int) or not str(version).strip():
        raise RulesFormatError(f"version: required, a non-empty string or an integer, got {json.dumps(version)}")
    blocked_ids = _list(raw, "blocked_item_ids")
    for n, item_id in enumerate(blocked_ids):
        _expect(item_id, str, f"blocked_item_ids[{n}]", "a string")
    blocked = tuple(_checked_filter(f, f"blocked_attributes[{n}]", attributes, limits)
                    for n, f in enumerate(_list(raw, "blocked_attributes")))
    for n, f in enumerate(blocked):
        if f.exclude:
            raise RulesFormatError(f"blocked_attributes[{n}].exclude: not allowed (the items that meet the "
                                   f"condition are blocked)")
    blocked = tuple(AttributeFilter(f.attribute, f.kind, f.values, f.match, f.min, f.max, exclude=True)
                    for f in blocked)

    pins: list[Pin] = []
    for n, entry in enumerate(_list(raw, "pinned")):
        where = f"pinned[{n}]"
        entry = _expect(entry, dict, where, "an object")
        _keys(entry, {"item_id", "position"}, where)
        item_id = _expect(entry.get("item_id"), str, f"{where}.item_id", "a string")
        position = _expect(entry.get("position"), int, f"{where}.position", "an integer")
        if item_id not in catalog:
            raise RulesFormatError(f"{where}.item_id: {json.dumps(item_id)} is not in the catalog")
        if not 1 <= position <= MAX_PIN_POSITION:
            raise RulesFormatError(f"{where}.position: {position} is outside 1..{MAX_PIN_POSITION} (1 is the top)")
        if any(p.item_id == item_id or p.position == position for p in pins):
            raise RulesFormatError(f"{where}: item {item_id} or position {position} is pinned twice")
        pins.append(Pin(item_id, position))

    boosts: list[Boost] = []
    for n, entry in enumerate(_list(raw, "boosts")):
        where = f"boosts[{n}]"
        entry = _expect(entry, dict, where, "an object")
        weight = _number(entry.get("weight"), f"{where}.weight")
        if "item_ids" in entry:
            _keys(entry, {"item_ids", "weight"}, where)
            ids = _expect(entry["item_ids"], list, f"{where}.item_ids", "a list of strings")
            for j, item_id in enumerate(ids):
                if not isinstance(item_id, str) or item_id not in catalog:
                    raise RulesFormatError(f"{where}.item_ids[{j}]: {json.dumps(item_id)[:60]} is not in the catalog")
            if not ids:
                raise RulesFormatError(f"{where}.item_ids: must not be empty")
            boosts.append(Boost(weight, item_ids=frozenset(ids)))
        else:
            condition = _checked_filter(entry, where, attributes, limits, extra_keys=frozenset({"weight"}))
            if condition.exclude:
                raise RulesFormatError(f"{where}.exclude: not allowed (boost the items that meet the condition)")
            boosts.append(Boost(weight, condition=condition))

    callers: dict[str, CallerDefaults] = {}
    for caller, entry in _expect(raw.get("callers", {}), dict, "callers", "an object").items():
        where = f"callers[{json.dumps(caller)}]"
        entry = _expect(entry, dict, where, "an object")
        _keys(entry, {"filters", "diversity"}, where)
        filters = _expect(entry.get("filters", []), list, f"{where}.filters", "a list")
        parsed = tuple(_checked_filter(f, f"{where}.filters[{n}]", attributes, limits) for n, f in enumerate(filters))
        if len(parsed) > limits.max_filters:
            raise RulesFormatError(f"{where}.filters: {len(parsed)} filters, at most {limits.max_filters}")
        diversity = (_diversity_from_json(entry["diversity"], f"{where}.diversity", attributes, limits)
                     if entry.get("diversity") is not None else None)
        callers[caller] = CallerDefaults(parsed, diversity)
    return Rules(str(version).strip(), frozenset(blocked_ids), blocked, tuple(sorted(pins, key=lambda p: p.position)),
                 tuple(boosts), callers)


def load_rules(path: str | Path, attributes: CatalogAttributes, limits: FilterLimits = FilterLimits()) -> Rules:
    """Read and check a rules file.

    Raises:
        RulesFormatError: the file cannot be read, is not JSON, or does not follow the format.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesFormatError(f"cannot read {path}: {exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RulesFormatError(f"not JSON: {exc}") from exc
    return parse_rules(raw, attributes, limits)


# --- one request ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourcedFilter:
    """A filter in force for a request and where it came from: ``request``, ``caller:<id>``, ``rules`` or
    ``query`` (read from the request's free text)."""

    filter: AttributeFilter
    source: str


@dataclass(frozen=True)
class Removal:
    """An item left out of the answer: ``reason`` one of the REMOVED_* names, ``detail`` for people."""

    item_id: str
    reason: str
    detail: str


@dataclass
class Ordered:
    """The answer's items and what shaped them."""

    items: list[tuple[str, float]]
    removed: list[Removal]
    notes: list[str]  # rules that changed the order or the set: pins placed, boosts applied


@dataclass(frozen=True)
class Policy:
    """Everything that constrains one request's answer."""

    filters: tuple[SourcedFilter, ...] = ()
    blocked_item_ids: frozenset[str] = frozenset()
    diversity: DiversityRule | None = None
    diversity_source: str = ""
    pins: tuple[Pin, ...] = ()
    boosts: tuple[Boost, ...] = ()
    rules_version: str = ""
    caller_key: str = ""  # the callers entry used ("" when none)

    @classmethod
    def build(cls, rules: Rules, *, filters: Sequence[AttributeFilter] = (), diversity: DiversityRule | None = None,
              caller_id: str = "", read_filters: Sequence[AttributeFilter] = ()) -> Policy:
        """The request's filters and diversity (already validated) joined with ``rules``; ``read_filters``: those
        read from the request's query (source ``query``)."""
        sourced = [SourcedFilter(f, SOURCE_REQUEST) for f in filters]
        sourced += [SourcedFilter(f, SOURCE_QUERY) for f in read_filters]
        found = rules.for_caller(caller_id)
        caller_key = ""
        diversity_source = SOURCE_REQUEST if diversity else ""
        if found is not None:
            caller_key, defaults = found
            sourced += [SourcedFilter(f, f"caller:{caller_key}") for f in defaults.filters]
            if diversity is None and defaults.diversity is not None:
                diversity, diversity_source = defaults.diversity, f"caller:{caller_key}"
        sourced += [SourcedFilter(f, SOURCE_RULES) for f in rules.blocked]
        return cls(tuple(sourced), rules.blocked_item_ids, diversity, diversity_source, rules.pins, rules.boosts,
                   rules.version, caller_key)

    @property
    def item_filters(self) -> list[AttributeFilter]:
        """Every filter in force (the request's, the caller's, the blocked conditions), for retrieval."""
        return [s.filter for s in self.filters]

    def check(self, item_id: str, catalog: Catalog) -> Removal | None:
        """Why ``item_id`` may not be returned, or None when it may."""
        if item_id in self.blocked_item_ids:
            return Removal(item_id, REMOVED_BLOCKED, f"blocked item (rules {self.rules_version})")
        n = first_violation(catalog[item_id], self.item_filters)
        if n is None:
            return None
        s = self.filters[n]
        if s.source == SOURCE_RULES:
            return Removal(item_id, REMOVED_BLOCKED, f"blocked: {s.filter.describe()} (rules {self.rules_version})")
        return Removal(item_id, REMOVED_FILTER, f"{s.filter.describe()} ({s.source})")

    def screen(self, scored: Sequence[tuple[str, float]], catalog: Catalog) -> tuple[list[tuple[str, float]],
                                                                                   list[Removal]]:
        """The items that may be returned (order kept) and the others with the reason."""
        kept, removed = [], []
        for item_id, score in scored:
            why = self.check(item_id, catalog)
            if why is None:
                kept.append((item_id, score))
            else:
                removed.append(why)
        return kept, removed

    def describe(self) -> list[str]:
        """The rules in force, one line each (the filters are listed on their own)."""
        lines = []
        if self.caller_key:
            lines.append(f"caller defaults: {self.caller_key}")
        if self.blocked_item_ids:
            lines.append(f"blocked items: {len(self.blocked_item_ids)} (rules {self.rules_version})")
        if self.diversity:
            lines.append(f"diversity: {self.diversity.describe()} ({self.diversity_source})")
        return lines

    def order(self, ranked: Sequence[tuple[str, float]], catalog: Catalog, num_items: int, *,
              pin_blocked: Callable[[str], str | None] = lambda _: None, insert_pins: bool = True) -> Ordered:
        """The answer from the ranked list: every item checked, boosts, pins, the diversity cap, the cut.

        Args:
            ranked: ``(item_id, score)`` best first.
            catalog: The items' attributes.
            num_items: The most items to return.
            pin_blocked: Why a pinned item that is not in ``ranked`` may not be added (e.g. it is in the
                user's history), or None when it may.
            insert_pins: False: pins only move items that are in ``ranked`` (caller-supplied candidates).
        """
        kept, removed = self.screen(ranked, catalog)
        notes: list[str] = []
        scores = dict(kept)
        if self.boosts:
            boosted = {i: s for i, s in kept}
            for boost in self.boosts:
                hit = [i for i, _ in kept if boost.applies(i, catalog)]
                for i in hit:
                    boosted[i] += boost.weight
                if hit:
                    notes.append(boost.describe())
            kept = sorted(boosted.items(), key=lambda p: -p[1])  # stable: ties keep the ranked order
            scores = dict(kept)

        placed: list[Pin] = []
        for pin in self.pins:
            if pin.position > num_items:
                continue
            if pin.item_id not in scores:
                if not insert_pins or any(r.item_id == pin.item_id for r in removed):
                    continue
                why = self.check(pin.item_id, catalog)
                if why is None and (blocked := pin_blocked(pin.item_id)) is not None:
                    why = Removal(pin.item_id, REMOVED_EXCLUDED, f"pinned item not added: {blocked}")
                if why is not None:
                    removed.append(why)
                    continue
            placed.append(pin)

        counts: dict[str, int] = {}
        if self.diversity is not None:
            pinned_ids, dropped = diversify([p.item_id for p in placed], catalog, self.diversity, counts=counts)
            removed += [Removal(i, REMOVED_DIVERSITY, f"{self.diversity.attribute} {v!r} already has "
                                f"{self.diversity.max_items_per_value}") for i, v in dropped]
            placed = [p for p in placed if p.item_id in set(pinned_ids)]
        pinned = {p.item_id for p in placed}
        rest = [i for i, _ in kept if i not in pinned]
        need = max(num_items - len(placed), 0)
        if self.diversity is not None:
            rest, dropped = diversify(rest, catalog, self.diversity, limit=need, counts=counts)
            removed += [Removal(i, REMOVED_DIVERSITY, f"{self.diversity.attribute} {v!r} already has "
                                f"{self.diversity.max_items_per_value}") for i, v in dropped]
        ids = rest[:need]
        for pin in placed:  # ascending positions: each lands where it was pinned, or at the end if the list is short
            ids.insert(min(pin.position - 1, len(ids)), pin.item_id)
            notes.append(f"pinned {pin.item_id} at position {ids.index(pin.item_id) + 1}")
        items = [(i, float(scores.get(i, 0.0))) for i in ids[:num_items]]
        return Ordered(items, removed, notes)
