"""Filters and rules between the protos and the domain (used by the servicer and the retrieval client)."""

from __future__ import annotations

from instructrec.v1 import common_pb2, recommend_service_pb2

from services.core.filters import ALL, ANY, RANGE, VALUES, AttributeFilter, DiversityRule
from services.core.rules import (
    REMOVED_BLOCKED,
    REMOVED_DIVERSITY,
    REMOVED_EXCLUDED,
    REMOVED_FILTER,
    Removal,
    SourcedFilter,
)

_MATCH_IN = {common_pb2.VALUE_MATCH_UNSPECIFIED: ANY, common_pb2.VALUE_MATCH_ANY: ANY,
             common_pb2.VALUE_MATCH_ALL: ALL}
_MATCH_OUT = {ANY: common_pb2.VALUE_MATCH_ANY, ALL: common_pb2.VALUE_MATCH_ALL}
_REASONS = {
    REMOVED_FILTER: recommend_service_pb2.REMOVAL_REASON_FILTER,
    REMOVED_BLOCKED: recommend_service_pb2.REMOVAL_REASON_BLOCKED,
    REMOVED_DIVERSITY: recommend_service_pb2.REMOVAL_REASON_DIVERSITY,
    REMOVED_EXCLUDED: recommend_service_pb2.REMOVAL_REASON_EXCLUDED,
}


def filter_from_proto(f: common_pb2.AttributeFilter) -> AttributeFilter:
    """The domain filter, unchecked (the recommender validates it); an unknown match value is kept as its
    number so that validation can name it."""
    which = f.WhichOneof("condition")
    if which == "value_set":
        return AttributeFilter(f.attribute, VALUES, tuple(f.value_set.values),
                               _MATCH_IN.get(f.value_set.match, str(f.value_set.match)), exclude=f.exclude)
    if which == "range":
        r = f.range
        return AttributeFilter(f.attribute, RANGE, min=r.min if r.HasField("min") else None,
                               max=r.max if r.HasField("max") else None, exclude=f.exclude)
    return AttributeFilter(f.attribute, "", exclude=f.exclude)


def filter_to_proto(f: AttributeFilter) -> common_pb2.AttributeFilter:
    if f.kind == RANGE:
        return common_pb2.AttributeFilter(attribute=f.attribute, exclude=f.exclude,
                                          range=common_pb2.NumericRange(min=f.min, max=f.max))
    return common_pb2.AttributeFilter(
        attribute=f.attribute, exclude=f.exclude,
        value_set=common_pb2.ValueSet(values=f.values, match=_MATCH_OUT[f.match]))


def diversity_from_proto(request: recommend_service_pb2.RecommendRequest) -> DiversityRule | None:
    if not request.HasField("diversity"):
        return None
    return DiversityRule(request.diversity.attribute, request.diversity.max_items_per_value)


def applied_filter_to_proto(s: SourcedFilter) -> recommend_service_pb2.AppliedFilter:
    return recommend_service_pb2.AppliedFilter(filter=filter_to_proto(s.filter), source=s.source,
                                               description=s.filter.describe())


def removal_to_proto(r: Removal) -> recommend_service_pb2.RemovedItem:
    return recommend_service_pb2.RemovedItem(item_id=r.item_id, reason=_REASONS[r.reason], detail=r.detail)
