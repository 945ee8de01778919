"""ConfirmDeadlines: one timer fails every confirm still waiting after the timeout."""

from __future__ import annotations

import asyncio

import pytest

from router.broker.publisher import ConfirmDeadlines


async def test_an_unconfirmed_publish_times_out_and_a_confirmed_one_does_not() -> None:
    loop = asyncio.get_running_loop()
    deadlines = ConfirmDeadlines(0.05)
    confirmed, silent = loop.create_future(), loop.create_future()
    started = loop.time()
    deadlines.watch(confirmed)
    deadlines.watch(silent)
    confirmed.set_result(None)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(silent, 5)
    assert loop.time() - started >= 0.05
    assert confirmed.result() is None
    assert len(deadlines) == 0


async def test_later_publishes_get_their_own_full_timeout() -> None:
    loop = asyncio.get_running_loop()
    deadlines = ConfirmDeadlines(0.2)
    first = loop.create_future()
    deadlines.watch(first)
    await asyncio.sleep(0.1)  # the second is published half a timeout later
    second = loop.create_future()
    second_at = loop.time()
    deadlines.watch(second)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(first, 5)
    assert not second.done()  # the timer that failed the first is re-armed for it
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(second, 5)
    assert loop.time() - second_at >= 0.2


async def test_a_cancelled_waiter_is_dropped_and_the_rest_still_time_out() -> None:
    loop = asyncio.get_running_loop()
    deadlines = ConfirmDeadlines(0.05)
    cancelled, waiting = loop.create_future(), loop.create_future()
    deadlines.watch(cancelled)
    deadlines.watch(waiting)
    cancelled.cancel()  # its caller went away: never given an exception
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting, 5)
    assert cancelled.cancelled()


async def test_confirmed_entries_are_forgotten_as_new_ones_come() -> None:
    loop = asyncio.get_running_loop()
    deadlines = ConfirmDeadlines(60)
    for _ in range(1000):
        future = loop.create_future()
        deadlines.watch(future)
        future.set_result(None)
    assert len(deadlines) == 1  # the last: the ones before it were confirmed
