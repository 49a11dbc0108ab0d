"""`instructrec recommend --filter`: the filter syntax of docs/business-rules.md -> AttributeFilter messages."""

import pytest
import typer
from instructrec.v1 import common_pb2

from tools.cli.recommend import parse_filter


def test_value_sets_ranges_and_exclusion():
    f = parse_filter("genres=Comedy, Romance")
    assert f.attribute == "genres" and list(f.value_set.values) == ["Comedy", "Romance"] and not f.exclude
    assert f.value_set.match == common_pb2.VALUE_MATCH_ANY
    assert parse_filter("genres&=Comedy,Romance").value_set.match == common_pb2.VALUE_MATCH_ALL
    r = parse_filter("!year=1990..")
    assert r.exclude and r.range.HasField("min") and r.range.min == 1990 and not r.range.HasField("max")


@pytest.mark.parametrize("bad", ["genres", "=Comedy", "year=a..b", "genres="])
def test_malformed_filters_are_refused(bad):
    with pytest.raises(typer.BadParameter):
        parse_filter(bad)
