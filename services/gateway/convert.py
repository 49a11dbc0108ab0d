"""Filters and rules between the protos and the domain (used by the servicer and the retrieval client).

The filter conversions themselves live in ``services.common.filters_proto`` (retrieval uses them too)."""

from __future__ import annotations

from instructrec.v1 import recommend_service_pb2

from services.common.filters_proto import filter_to_proto
from services.core.filters import DiversityRule
from services.core.rules import (
    REMOVED_BLOCKED,
    REMOVED_DIVERSITY,
    REMOVED_EXCLUDED,
    REMOVED_FILTER,
    Removal,
    SourcedFilter,
)

_REASONS = {
    REMOVED_FILTER: recommend_service_pb2.REMOVAL_REASON_FILTER,
    REMOVED_BLOCKED: recommend_service_pb2.REMOVAL_REASON_BLOCKED,
    REMOVED_DIVERSITY: recommend_service_pb2.REMOVAL_REASON_DIVERSITY,
    REMOVED_EXCLUDED: recommend_service_pb2.REMOVAL_REASON_EXCLUDED,
}


def diversity_from_proto(request: recommend_service_pb2.RecommendRequest) -> DiversityRule | None:
    if not request.HasField("diversity"):
        return None
    return DiversityRule(request.diversity.attribute, request.diversity.max_items_per_value)


def applied_filter_to_proto(s: SourcedFilter) -> recommend_service_pb2.AppliedFilter:
    return recommend_service_pb2.AppliedFilter(filter=filter_to_proto(s.filter), source=s.source,
                                               description=s.filter.describe())


def removal_to_proto(r: Removal) -> recommend_service_pb2.RemovedItem:
    return recommend_service_pb2.RemovedItem(item_id=r.item_id, reason=_REASONS[r.reason], detail=r.detail)

