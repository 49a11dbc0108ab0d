"""The `instructrec recommend` command against the running services (the README's call)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from tools.cli import app

pytestmark = pytest.mark.triton


async def test_recommend_prints_items_and_the_instruction(stack):
    runner = CliRunner()
    addr = stack.addr("gateway")
    table = await asyncio.to_thread(runner.invoke, app, ["recommend", "--user", "3", "--query", "a comedy",
                                                         "--addr", addr])
    assert table.exit_code == 0, table.output
    assert "Film number" in table.output and "instruction (P2-I1-T3-0)" in table.output
    raw = await asyncio.to_thread(runner.invoke, app, ["recommend", "--user", "3", "--num", "4", "--addr", addr,
                                                       "--json"])
    response = json.loads(raw.output)
    assert len(response["items"]) == 4 and response["instruction"]


async def test_recommend_reports_a_bad_request_and_exits_non_zero(stack):
    result = await asyncio.to_thread(CliRunner().invoke, app, ["recommend", "--num", "-1", "--addr",
                                                               stack.addr("gateway")])
    assert result.exit_code == 1 and "INVALID_ARGUMENT" in result.output and "num_items" in result.output
