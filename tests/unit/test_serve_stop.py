"""cancel_until_done: a start-up that loses one cancellation is cancelled again."""

from __future__ import annotations

import asyncio

from router.serve import cancel_until_done


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def connect_forever() -> None:
        # Like a reconnect loop whose connect attempt turned the cancellation into a refusal
        # (Python 3.11's wait_for race): the first cancellation is taken as one more failure.
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(connect_forever())
    await asyncio.sleep(0)
    cancel_until_done(asyncio.get_running_loop(), task, every=0.05)
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
    assert 1 == swallowed


async def test_a_task_already_done_is_left_alone() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    cancel_until_done(asyncio.get_running_loop(), task, every=0.05)
    assert not task.cancelled()
