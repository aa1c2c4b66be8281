"""The shared byte budget for responses being written: bounded, in order, never stuck."""

from __future__ import annotations

import asyncio

import pytest

from pilot.xds.sendbudget import SendBudget


async def test_waits_for_room_and_grants_in_order():
    budget = SendBudget(100)
    await budget.acquire(60)
    order = []

    async def take(name, size):
        await budget.acquire(size)
        order.append(name)

    big, small = asyncio.create_task(take("big", 50)), asyncio.create_task(take("small", 10))
    await asyncio.sleep(0.01)
    assert order == [] and budget.used == 60  # small fits, but waits behind big (first come, first served)
    budget.release(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and budget.used == 60 and budget.peak == 60


async def test_a_response_larger_than_the_budget_goes_alone():
    budget = SendBudget(100)
    await budget.acquire(500)  # nothing in flight: allowed
    waiter = asyncio.create_task(budget.acquire(1))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    budget.release(500)
    await asyncio.wait_for(waiter, 1)
    assert budget.used == 1


async def test_a_cancelled_waiter_lets_the_next_one_through():
    budget = SendBudget(100)
    await budget.acquire(90)
    blocked = asyncio.create_task(budget.acquire(50))
    behind = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0.01)
    blocked.cancel()
    await asyncio.wait_for(behind, 1)
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert budget.used == 95


def test_budget_must_be_positive():
    with pytest.raises(ValueError):
        SendBudget(0)
