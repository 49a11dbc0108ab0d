"""Attribute filters between ``common.proto``'s ``AttributeFilter`` and the domain's (gateway and retrieval)."""

from __future__ import annotations

from instructrec.v1 import common_pb2

from services.core.filters import ALL, ANY, RANGE, VALUES, AttributeFilter

_MATCH_IN = {common_pb2.VALUE_MATCH_UNSPECIFIED: ANY, common_pb2.VALUE_MATCH_ANY: ANY,
             common_pb2.VALUE_MATCH_ALL: ALL}
_MATCH_OUT = {ANY: common_pb2.VALUE_MATCH_ANY, ALL: common_pb2.VALUE_MATCH_ALL}


def filter_from_proto(f: common_pb2.AttributeFilter) -> AttributeFilter:
    """The domain filter, unchecked (the caller validates it); an unknown match value is kept as its number so
    that validation can name it."""
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
