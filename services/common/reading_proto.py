"""A request's reading between ``common.proto``'s ``RequestReading`` and the domain's (instruction and gateway)."""

from __future__ import annotations

from instructrec.v1 import common_pb2

from services.common.filters_proto import filter_from_proto, filter_to_proto
from services.core.lexicon import TitleMatch
from services.core.reading import ReadFilter, Reading, Reference


def reading_to_proto(reading: Reading, *, cached: bool = False) -> common_pb2.RequestReading:
    return common_pb2.RequestReading(
        constraints=[common_pb2.ReadConstraint(filter=filter_to_proto(f.filter), confidence=f.confidence,
                                               text=f.text, hard=f.hard) for f in reading.filters],
        references=[common_pb2.ReadReference(mention=r.mention, item_id=r.item_id, title=r.title,
                                             confidence=r.score / 100.0,
                                             alternative_item_ids=[a.item_id for a in r.alternatives])
                    for r in reading.references],
        residual_text=reading.residual_text, unread_spans=list(reading.unread),
        reader_version=reading.reader_version, cached=cached,
    )


def reading_from_proto(msg: common_pb2.RequestReading) -> Reading:
    """The domain reading; a constraint's ``hard`` flag comes back through its confidence (the same floor)."""
    return Reading(
        filters=tuple(ReadFilter(filter_from_proto(c.filter), c.confidence, c.text) for c in msg.constraints),
        references=tuple(Reference(r.mention, r.item_id, r.title, r.confidence * 100.0, r.confidence,
                                   tuple(TitleMatch(i, "", 0.0) for i in r.alternative_item_ids))
                         for r in msg.references),
        residual_text=msg.residual_text, unread=tuple(msg.unread_spans), reader_version=msg.reader_version,
    )
