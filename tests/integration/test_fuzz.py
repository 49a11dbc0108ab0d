"""Fuzzing at scale: 10,000 generated requests per public RPC against the real services (tiny models on a
real Triton). Run with ``make test-fuzz`` (``pytest -m fuzz``); ``make test`` skips it.

Each RPC gets a seeded mix of request bodies:

- random bytes (0-256 bytes);
- plausible requests (what a real caller sends: catalog ids, short queries, matching scores);
- plausible requests of the RPC's type, mutated (bits flipped, bytes cut, inserted or duplicated, a stray field
  appended, the end chopped off);
- random valid requests: catalog ids and junk ids (empty, 1,000 characters, control characters), queries
  from empty to 1,100 characters of any code points, int32 extremes, non-finite scores, lists up to 40 long;
- valid messages of the other RPCs' request and response types.

None may end in INTERNAL or UNKNOWN; every call is counted in ``instructrec_rpc_requests_total``; every
service (and its liveness) is SERVING afterwards. The counts and times are printed.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import Counter

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from instructrec.v1 import (
    instruction_service_pb2,
    ranking_service_pb2,
    recommend_service_pb2,
    retrieval_service_pb2,
)
from prometheus_client import REGISTRY

from services.common.server import LIVENESS_SERVICE

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.triton,
    # Minutes of requests: only when asked for by marker (make test-fuzz), not in `make test`.
    pytest.mark.skipif("'fuzz' not in (config.option.markexpr or '')", reason="run with `make test-fuzz`"),
]

REQUESTS_PER_RPC = 10_000
CONCURRENCY = 8
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
RPCS = [
    ("gateway", "/instructrec.v1.RecommendService/Recommend", recommend_service_pb2.RecommendRequest),
    ("gateway", "/instructrec.v1.RecommendService/RecordInteractions", recommend_service_pb2.RecordInteractionsRequest),
    ("instruction", "/instructrec.v1.InstructionService/GenerateInstruction",
     instruction_service_pb2.GenerateInstructionRequest),
    ("retrieval", "/instructrec.v1.RetrievalService/RetrieveCandidates",
     retrieval_service_pb2.RetrieveCandidatesRequest),
    ("ranking", "/instructrec.v1.RankingService/RankCandidates", ranking_service_pb2.RankCandidatesRequest),
]
OTHER_TYPES = [
    recommend_service_pb2.RecommendRequest, recommend_service_pb2.RecommendResponse,
    recommend_service_pb2.RecordInteractionsRequest, recommend_service_pb2.RecordInteractionsResponse,
    instruction_service_pb2.GenerateInstructionRequest, instruction_service_pb2.GenerateInstructionResponse,
    retrieval_service_pb2.RetrieveCandidatesRequest, retrieval_service_pb2.RetrieveCandidatesResponse,
    ranking_service_pb2.RankCandidatesRequest, ranking_service_pb2.RankCandidatesResponse,
]
NUM_ITEMS = 80  # the synthetic catalog's ids are "1".."80"
INT32 = (-(2**31), 2**31 - 1)


class RequestGenerator:
    """Seeded request bodies of every kind for one request type."""

    def __init__(self, request_type: type[Message], seed: str) -> None:
        self.type = request_type
        self.rng = random.Random(seed)
        # A few dozen histories recur, so preference statements are mostly cached (as with real users).
        self.histories = [self._known_ids(self.rng.randint(1, 12)) for _ in range(48)]

    def body(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.2:
            return self.rng.randbytes(int(self.rng.triangular(0, 256, 8)))
        if roll < 0.4:
            return self._mutate(self.plausible().SerializeToString())
        if roll < 0.6:
            return self.message(self.type).SerializeToString()
        if roll < 0.9:
            return self.plausible().SerializeToString()
        return self.message(self.rng.choice(OTHER_TYPES)).SerializeToString()

    # ---------------------------------------------------------------- valid messages

    def plausible(self) -> Message:
        """A request of the RPC's type that a real caller could send (mostly valid, edges now and then)."""
        message = self.type()
        names = {f.name for f in self.type.DESCRIPTOR.fields}
        rng = self.rng
        if "user_id" in names and rng.random() < 0.5:
            message.user_id = str(rng.randint(1, 14)) if rng.random() < 0.8 else self._text(max_len=40)
        if "history_item_ids" in names and rng.random() < 0.8:
            message.history_item_ids.extend(rng.choice(self.histories))
        if "query" in names and rng.random() < 0.6:
            message.query = self._text(max_len=None if rng.random() < 0.3 else 60)
        if "instruction" in names:
            message.instruction = self._text(max_len=2_000) if rng.random() < 0.3 else \
                "Which movie fits best? " + self._text(max_len=120)
        if "num_items" in names:
            message.num_items = rng.randint(0, 20)
        if "num_candidates" in names:
            message.num_candidates = rng.randint(0, 100)
        if "exclude_item_ids" in names and rng.random() < 0.3:
            message.exclude_item_ids.extend(self._known_ids(rng.randint(1, 5)))
        required = self.type in (instruction_service_pb2.GenerateInstructionRequest,
                                 ranking_service_pb2.RankCandidatesRequest)
        if "candidate_item_ids" in names and (required or rng.random() < 0.4):
            message.candidate_item_ids.extend(self._known_ids(rng.randint(1, 20)))
        if "interactions" in names:  # a few events of known users and items; event ids recur (retries)
            for _ in range(rng.randint(0, 6)):
                message.interactions.add(user_id=str(rng.randint(1, 14)), item_id=str(rng.randint(0, NUM_ITEMS + 2)),
                                         event_id=f"fuzz-{rng.randint(1, 2_000)}")
        if "retrieval_scores" in names and rng.random() < 0.5:
            message.retrieval_scores.extend(rng.uniform(-1, 1) for _ in message.candidate_item_ids)
        return message

    def message(self, message_type: type[Message], depth: int = 0) -> Message:
        message = message_type()
        for field in message_type.DESCRIPTOR.fields:
            if self.rng.random() < 0.35:
                continue  # left unset
            repeated = field.is_repeated
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth < 2:
                    for _ in range(self.rng.randint(1, 3) if repeated else 1):
                        target = getattr(message, field.name)
                        child = target.add() if repeated else target
                        child.CopyFrom(self.message(type(child), depth + 1))
            elif repeated:
                getattr(message, field.name).extend(self._values(field))
            else:
                setattr(message, field.name, self._value(field))
        return message

    def _values(self, field: FieldDescriptor) -> list:
        if field.name == "history_item_ids" and self.rng.random() < 0.6:
            return list(self.rng.choice(self.histories))
        if field.name.endswith("item_ids"):
            roll = self.rng.random()
            if roll < 0.5:
                return self._known_ids(self.rng.randint(1, 20))
            if roll < 0.6:
                return self._known_ids(self.rng.randint(21, 40), unique=False)
            return [self._id() for _ in range(self.rng.randint(0, 40))]
        if field.name == "retrieval_scores" and self.rng.random() < 0.7:
            return [self.rng.uniform(-1, 1) for _ in range(self.rng.randint(1, 20))]
        return [self._value(field) for _ in range(self.rng.randint(0, 22))]

    def _value(self, field: FieldDescriptor):
        t = field.type
        if t == FieldDescriptor.TYPE_STRING:
            return self._id() if field.name.endswith("_id") else self._text()
        if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
            return self.rng.choice([self.rng.randint(0, 25), self.rng.randint(-3, 1001), self.rng.randint(*INT32)])
        if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            special = self.rng.choice([float("nan"), float("inf"), -float("inf"), 3.4e38, -0.0])
            return special if self.rng.random() < 0.2 else self.rng.uniform(-100, 100)
        if t == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == FieldDescriptor.TYPE_ENUM:
            return self.rng.choice([v.number for v in field.enum_type.values])
        raise AssertionError(f"no generator for field type {t} ({field.full_name})")

    def _known_ids(self, n: int, unique: bool = True) -> list[str]:
        ids = range(1, NUM_ITEMS + 1)
        picks = self.rng.sample(ids, min(n, NUM_ITEMS)) if unique else self.rng.choices(ids, k=n)
        return [str(i) for i in picks]

    def _id(self) -> str:
        roll = self.rng.random()
        if roll < 0.6:
            return str(self.rng.randint(1, NUM_ITEMS))
        if roll < 0.7:
            return ""
        if roll < 0.75:
            return "x" * self.rng.choice([256, 257, 1_000])
        return self._text(max_len=40)

    def _text(self, max_len: int | None = None) -> str:
        roll = self.rng.random()
        if max_len is None and roll < 0.15:
            n = self.rng.randint(900, 1_100)  # around the 1,000-character limit
        else:
            n = self.rng.randint(0, max_len or 200)
        alphabet = self.rng.choice(["ascii", "words", "any", "control"])
        if alphabet == "ascii":
            return "".join(chr(self.rng.randint(32, 126)) for _ in range(n))
        if alphabet == "words":
            return " ".join(self.rng.choice(["funny", "sad", "movie", "90s", "space", "a", "the", "film", "noir",
                                             "qxz", "\u202e", "{query}", "%s"]) for _ in range(n // 5))
        if alphabet == "control":
            return "".join(chr(self.rng.randint(0, 31)) for _ in range(n))
        chars = (self.rng.randint(1, 0x10FFFF) for _ in range(n))
        return "".join(chr(c) for c in chars if not 0xD800 <= c <= 0xDFFF)

    # ---------------------------------------------------------------- mutations

    def _mutate(self, data: bytes) -> bytes:
        buf = bytearray(data)
        for _ in range(self.rng.randint(1, 3)):
            op = self.rng.randrange(6)
            pos = self.rng.randint(0, len(buf))
            if op == 0 and buf:  # flip a bit
                i = self.rng.randrange(len(buf))
                buf[i] ^= 1 << self.rng.randrange(8)
            elif op == 1:  # cut a range
                del buf[pos:pos + self.rng.randint(1, 8)]
            elif op == 2:  # insert random bytes
                buf[pos:pos] = self.rng.randbytes(self.rng.randint(1, 8))
            elif op == 3 and buf:  # duplicate a chunk
                start = self.rng.randrange(len(buf))
                buf[pos:pos] = buf[start:start + self.rng.randint(1, 16)]
            elif op == 4:  # append a stray field: a random number and wire type
                number, wire = self.rng.randint(1, 40), self.rng.choice([0, 1, 2, 5])
                payload = {0: b"\x01", 1: struct.pack("<d", 1.0), 2: b"\x03abc", 5: struct.pack("<f", 1.0)}[wire]
                buf += _varint(number << 3 | wire) + payload
            else:  # chop off the end
                del buf[pos:]
        return bytes(buf)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _rpc_count(service: str, method: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "instructrec_rpc_requests":
            continue
        for sample in metric.samples:
            if (sample.name.endswith("_total") and sample.labels.get("service") == service
                    and sample.labels.get("method") == method):
                total += sample.value
    return total


async def _fuzz(addr: str, method: str, generator: RequestGenerator, n: int) -> Counter:
    codes: Counter = Counter()
    failures: list[str] = []
    bodies = iter([generator.body() for _ in range(n)])

    async with grpc.aio.insecure_channel(addr) as channel:
        call = channel.unary_unary(method)

        async def worker() -> None:
            for body in bodies:  # shared iterator: each body is sent once
                try:
                    await call(body, timeout=60)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as err:
                    code = err.code()
                    if code in FORBIDDEN and len(failures) < 5:
                        failures.append(f"{code.name} {err.details()!r} for {body[:200]!r}")
                codes[code] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert not failures, failures
    return codes


async def _serving(addr: str, service: str = "") -> bool:
    async with grpc.aio.insecure_channel(addr) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                   timeout=10)
    return response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(("service", "method", "request_type"), RPCS, ids=[r[1].rsplit("/", 1)[1] for r in RPCS])
async def test_ten_thousand_generated_requests_never_fail_internally(stack, service, method, request_type):
    rpc_name = method.rsplit("/", 1)[-1]
    counted_before = _rpc_count(service, rpc_name)
    start = time.perf_counter()
    codes = await _fuzz(stack.addr(service), method, RequestGenerator(request_type, f"fuzz-{service}"),
                        REQUESTS_PER_RPC)
    elapsed = time.perf_counter() - start
    summary = ", ".join(f"{code.name} {n}" for code, n in codes.most_common())
    print(f"\n{rpc_name}: {sum(codes.values())} requests in {elapsed:.1f} s "
          f"({sum(codes.values()) / elapsed:.0f}/s): {summary}")
    assert sum(codes.values()) == REQUESTS_PER_RPC
    assert not FORBIDDEN & set(codes)
    # Both ends are exercised: most bodies are refused, and thousands get deep into the pipeline.
    assert codes[grpc.StatusCode.OK] > 2_000 and codes[grpc.StatusCode.INVALID_ARGUMENT] > 4_000, codes
    for _ in range(100):  # each call is counted just after its status is sent: wait for the last ones
        if _rpc_count(service, rpc_name) - counted_before >= REQUESTS_PER_RPC:
            break
        await asyncio.sleep(0.01)
    assert _rpc_count(service, rpc_name) - counted_before == REQUESTS_PER_RPC  # every call counted
    for name in ("gateway", "instruction", "retrieval", "ranking"):
        assert await _serving(stack.addr(name)) and await _serving(stack.addr(name), LIVENESS_SERVICE), name
