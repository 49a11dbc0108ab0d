"""Admission control: bounded waiting, shedding by expected wait, no slot leaked."""

import asyncio

import grpc
import pytest

from services.common.admission import (
    SHED_EXPECTED_WAIT,
    SHED_QUEUE_FULL,
    SHED_WAITED_TOO_LONG,
    Admission,
    AdmissionSettings,
    Shed,
)
from services.common.errors import status_code


def admission(inflight=2, waiting=10, max_wait=1.0, service_time=0.1) -> Admission:
    return Admission(AdmissionSettings(inflight, waiting, max_wait, initial_service_time_s=service_time))


async def test_free_slots_admit_at_once_and_release_hands_the_slot_to_the_next_waiter():
    a = admission(inflight=1)
    first = await a.acquire(None)
    assert a.inflight == 1 and a.expected_wait_s() == pytest.approx(0.1)
    second = asyncio.create_task(a.acquire(5.0))
    await asyncio.sleep(0.01)
    assert a.waiting == 1 and not second.done()
    a.release(first)
    started = await second
    assert a.inflight == 1 and a.waiting == 0
    a.release(started)
    assert a.inflight == 0


async def test_an_rpc_whose_expected_wait_outlasts_the_limit_or_its_deadline_is_shed_at_once():
    a = admission(inflight=1, max_wait=0.25, service_time=0.1)
    held = await a.acquire(None)
    waiters = [asyncio.create_task(a.acquire(10.0)) for _ in range(2)]  # expected 0.1 and 0.2 s: admitted
    await asyncio.sleep(0)
    with pytest.raises(Shed) as shed:  # 3 x 0.1 s > 0.25 s
        await a.acquire(10.0)
    assert shed.value.reason == SHED_EXPECTED_WAIT and status_code(shed.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The deadline less one service time is the limit too: 0.15 s left cannot wait 0.3 s.
    with pytest.raises(Shed, match="overloaded"):
        await a.acquire(0.15)
    a.release(held)
    for w in waiters:
        a.release(await w)
    assert a.inflight == 0 and a.waiting == 0


async def test_a_full_waiting_room_refuses_new_rpcs():
    a = admission(inflight=1, waiting=1, max_wait=10.0)
    held = await a.acquire(None)
    waiter = asyncio.create_task(a.acquire(None))
    await asyncio.sleep(0)
    with pytest.raises(Shed) as shed:
        await a.acquire(None)
    assert shed.value.reason == SHED_QUEUE_FULL
    a.release(held)
    a.release(await waiter)


async def test_an_rpc_that_waits_far_past_its_estimate_is_refused_before_any_work():
    a = admission(inflight=1, max_wait=0.05, service_time=0.01)
    held = await a.acquire(None)
    with pytest.raises(Shed) as shed:
        await a.acquire(None)  # expected 0.01 s; the slot never comes within the 0.05 s limit
    assert shed.value.reason == SHED_WAITED_TOO_LONG and a.waiting == 0
    a.release(held)
    assert a.inflight == 0


async def test_a_cancelled_waiter_leaks_no_slot():
    a = admission(inflight=1, max_wait=10.0)
    held = await a.acquire(None)
    waiter = asyncio.create_task(a.acquire(None))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    a.release(held)
    assert a.inflight == 0 and a.waiting == 0
    assert await a.acquire(None) and a.inflight == 1


async def test_the_service_time_estimate_follows_what_rpcs_take():
    a = Admission(AdmissionSettings(1, 1, 1.0, initial_service_time_s=1.0, smoothing=0.5))
    started = await a.acquire(None)
    a.release(started)  # ~0 s
    assert a.service_time_s == pytest.approx(0.5, abs=0.01)
