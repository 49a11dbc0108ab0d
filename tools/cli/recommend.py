"""`instructrec recommend`: one Recommend call to the gateway, printed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from tools.cli.common import (
    console,
)
from tools.core.channels import ClientCredentials, open_tool_channel


def parse_filter(text: str):
    """``genres=Comedy,Romance`` (any of), ``genres&=Comedy,Romance`` (all of), ``year=1990..1999`` (range, either
    end may be empty), a leading ``!`` excludes: the filter syntax of docs/business-rules.md -> an AttributeFilter."""
    from instructrec.v1 import common_pb2

    exclude = text.startswith("!")
    body = text[1:] if exclude else text
    match_all = "&=" in body
    attribute, sep, value = body.partition("&=" if match_all else "=")
    if not sep or not attribute.strip() or not value.strip():
        raise typer.BadParameter(f"{text!r}: expected ATTRIBUTE=VALUES or ATTRIBUTE=MIN..MAX", param_hint="--filter")
    f = common_pb2.AttributeFilter(attribute=attribute.strip(), exclude=exclude)
    if ".." in value and not match_all:
        low, _, high = value.partition("..")
        try:
            bounds = {k: float(v) for k, v in (("min", low), ("max", high)) if v.strip()}
        except ValueError:
            raise typer.BadParameter(f"{text!r}: range bounds must be numbers", param_hint="--filter") from None
        f.range.CopyFrom(common_pb2.NumericRange(**bounds))
    else:
        match = common_pb2.VALUE_MATCH_ALL if match_all else common_pb2.VALUE_MATCH_ANY
        f.value_set.CopyFrom(common_pb2.ValueSet(values=[v.strip() for v in value.split(",") if v.strip()],
                                                 match=match))
    return f


def split_ids(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def recommend(
    user: Annotated[str, typer.Option(help="User id; a known user's history comes from the interaction store.")] = "",
    query: Annotated[str, typer.Option(help="Free-text intention, e.g. 'a funny movie for tonight'.")] = "",
    history: Annotated[str, typer.Option(help="Comma-separated item ids, oldest first; replaces stored history.")] = "",
    num: Annotated[int, typer.Option(help="Number of items (0 = server default, 10).")] = 0,
    exclude: Annotated[str, typer.Option(help="Comma-separated item ids never to return.")] = "",
    candidates: Annotated[str, typer.Option(
        help="Comma-separated item ids to re-rank (no search; retrieval scores them).")] = "",
    addr: Annotated[str, typer.Option(help="Gateway host:port.")] = "localhost:50051",
    timeout: Annotated[float, typer.Option(help="Deadline of the call in seconds.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
    tls_ca: Annotated[Path | None, typer.Option(help="CA certificate (PEM) of a TLS gateway; enables TLS.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Client certificate (PEM) for mutual TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Client private key (PEM) for mutual TLS.")] = None,
    token: Annotated[str, typer.Option(help="Bearer token, sent as 'authorization: Bearer <token>'.",
                                       envvar="INSTRUCTREC_TOKEN")] = "",
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", help="Attribute filter, repeatable: genres=Comedy,Romance (any of), genres&=Comedy,Romance "
                         "(all of), year=1990..1999 (range; an end may be empty); a leading ! excludes.")] = None,
    diversity: Annotated[str, typer.Option(help="At most N items per value of an attribute: genres:2.")] = "",
    caller: Annotated[str, typer.Option(help="caller_id: selects the caller's defaults in the rules file.")] = "",
) -> None:
    """Call Recommend on the gateway and print the items and the instruction the ranker followed."""
    import grpc
    from google.protobuf.json_format import MessageToDict
    from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

    request = recommend_service_pb2.RecommendRequest(
        user_id=user, query=query, history_item_ids=split_ids(history), num_items=num,
        exclude_item_ids=split_ids(exclude), candidate_item_ids=split_ids(candidates),
        filters=[parse_filter(f) for f in filters or []], caller_id=caller,
    )
    if diversity:
        attribute, _, cap = diversity.rpartition(":")
        if not attribute or not cap.isdigit():
            raise typer.BadParameter(f"{diversity!r}: expected ATTRIBUTE:N", param_hint="--diversity")
        request.diversity.CopyFrom(recommend_service_pb2.DiversityRule(attribute=attribute,
                                                                       max_items_per_value=int(cap)))

    try:
        credentials = ClientCredentials.from_files(ca=tls_ca, cert=tls_cert, key=tls_key, token=token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).splitlines()[-1], param_hint="--tls-cert/--tls-key") from None

    async def call():
        async with open_tool_channel(addr, credentials) as ch:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
            return await stub.Recommend(request, timeout=timeout)

    try:
        response = asyncio.run(call())
    except grpc.aio.AioRpcError as err:
        console.print(f"[red]{err.code().name}[/red]: {err.details()}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return
    table = Table(title=f"Recommendations for {'user ' + user if user else 'an anonymous user'}"
                  + (f': "{query}"' if query else ""))
    table.add_column("#", justify="right")
    table.add_column("item_id", justify="right")
    table.add_column("title")
    table.add_column("score", justify="right")
    for rank, item in enumerate(response.items, 1):
        table.add_row(str(rank), item.item_id, item.title, f"{item.score:.4f}")
    console.print(table)
    console.print(Panel(response.instruction or "(none)", title=f"instruction ({response.template_id or '-'})"))
    versions = ", ".join(f"{v.model_name} v{v.version}" for v in response.model_versions)
    timings = ", ".join(f"{t.stage} {t.duration_ms:.0f} ms" for t in response.stage_timings)
    console.print(f"models: {versions or '-'}   stages: {timings or '-'}")
    if response.degraded:
        console.print("[yellow]degraded:[/yellow] " + "; ".join(response.degraded_reasons))
    if response.unknown_history_item_ids:
        console.print("unknown history ids skipped: " + ", ".join(response.unknown_history_item_ids))
    if response.HasField("reading"):
        _print_reading(response.reading)
    for relaxed in response.relaxed_constraints:
        console.print(f"[yellow]relaxed[/yellow] (too few items met it): {relaxed}")
    if response.understood_intent:
        console.print("understood from the query (soft preferences): " + ", ".join(
            f"{u.attribute}={u.value} (p {u.probability:.2f})" for u in response.understood_intent))
    for applied in response.applied_filters:
        console.print(f"filter ({applied.source}): {applied.description}")
    for rule in response.applied_rules:
        console.print(f"rule{' v' + response.rules_version if response.rules_version else ''}: {rule}")
    if response.removed_items:
        console.print(f"removed {len(response.removed_items)}: " + "; ".join(
            f"{r.item_id} ({r.detail})" for r in response.removed_items[:10]))
    if response.fewer_items:
        console.print("[yellow]fewer items than asked: the filters and rules leave fewer[/yellow]")


COMMANDS = {"recommend": recommend}
"""The group's commands by their name on the command line."""


def _print_reading(reading) -> None:
    """How the gateway read the query: each constraint with its confidence, the references, the residual text."""
    from services.common.filters_proto import filter_from_proto

    for c in reading.constraints:
        kind = "filter" if c.hard else "soft (not sure enough)"
        console.print(f"read ({kind}, p {c.confidence:.2f}): {filter_from_proto(c.filter).describe()}  "
                      f"[dim]from {escape(repr(c.text))}[/dim]")
    for r in reading.references:
        others = f"; also close: {', '.join(r.alternative_item_ids)}" if r.alternative_item_ids else ""
        console.print(f"read reference: {escape(repr(r.mention))} -> {r.item_id} {escape(r.title)} "
                      f"(match {r.confidence:.2f}{others})")
    if reading.unread_spans:
        console.print("read but not in the catalog: " + ", ".join(map(repr, reading.unread_spans)))
    console.print(f"text searched: {escape(repr(reading.residual_text))}"
                  f"{' (cached reading)' if reading.cached else ''}")

