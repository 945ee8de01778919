"""The pacing arithmetic: Shopify's cost bucket as the answers report it (throttleStatus,
https://shopify.dev/docs/api/usage/rate-limits), refilled over the time since, and how long a
request of a given cost waits; and the turns a request takes (a slot, then room)."""

from __future__ import annotations

import asyncio
import math

import pytest

from consumers.storefronts.pacing import (
    CostBucket,
    Seen,
    Slots,
    Ticket,
    read_status,
    room_wait,
)


def status(available: float, maximum: float = 2000.0, rate: float = 100.0,
           requested: float = 75) -> dict[str, object]:
    """An answer's `extensions.cost`, as Shopify documents it."""
    return {"requestedQueryCost": requested, "actualQueryCost": requested,
            "throttleStatus": {"maximumAvailable": maximum, "currentlyAvailable": available,
                               "restoreRate": rate}}


class TestSeen:
    def test_refills_at_the_restore_rate_up_to_the_maximum(self):
        seen = Seen(maximum=2000.0, available=100.0, restore_rate=100.0, at=10.0)
        assert 100.0 == seen.now(10.0)
        assert 350.0 == seen.now(12.5)
        assert 2000.0 == seen.now(40.0)  # 19 s would be full; no more than full

    def test_a_clock_before_the_answer_is_no_refill(self):
        assert 100.0 == Seen(2000.0, 100.0, 100.0, at=10.0).now(9.0)

    def test_read_from_an_answer(self):
        assert Seen(1000.0, 666.0, 50.0, 3.0) == read_status(status(666, 1000, 50), 3.0)

    @pytest.mark.parametrize("cost", [
        None, {}, {"throttleStatus": None},
        {"throttleStatus": {"maximumAvailable": 2000, "currentlyAvailable": 5}},
        status(5, rate=0), status(5, maximum=0), status(float("nan")),
        {"throttleStatus": {"maximumAvailable": "x", "currentlyAvailable": 5,
                            "restoreRate": 100}},
    ])
    def test_an_answer_that_does_not_say_is_no_state(self, cost):
        assert read_status(cost, 0.0) is None


class TestRoomWait:
    def test_fits_now(self):
        assert 0.0 == room_wait(Seen(2000.0, 500.0, 100.0, 0.0), 0.0, 500.0, 0.0)

    def test_waits_for_the_missing_points_at_the_restore_rate(self):
        seen = Seen(2000.0, 10.0, 100.0, 0.0)
        assert 0.65 == pytest.approx(room_wait(seen, 0.0, 75.0, 0.0))
        assert 0.0 == room_wait(seen, 0.0, 75.0, 0.65)  # refilled meanwhile

    def test_counts_the_points_promised_to_requests_in_flight(self):
        seen = Seen(2000.0, 200.0, 100.0, 0.0)
        assert 0.0 == room_wait(seen, 125.0, 75.0, 0.0)
        assert 0.75 == pytest.approx(room_wait(seen, 200.0, 75.0, 0.0))

    def test_a_cost_above_the_maximum_waits_for_a_full_bucket_only(self):
        seen = Seen(1000.0, 0.0, 50.0, 0.0)
        assert 20.0 == room_wait(seen, 0.0, 5000.0, 0.0)

    def test_nothing_seen_one_request_goes_the_rest_wait_for_its_answer(self):
        assert 0.0 == room_wait(None, 0.0, 1000.0, 0.0)
        assert math.isinf(room_wait(None, 1000.0, 75.0, 0.0))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestCostBucket:
    async def test_the_first_answer_tells_the_bucket_and_the_operations_cost(self):
        clock = Clock()
        bucket = CostBucket({"Order": 1000.0}, max_in_flight=4, clock=clock)
        async with bucket.turn("Order") as ticket:
            assert 1000.0 == bucket.pending
            clock.now += 0.5  # the answer comes half a second later
            bucket.observe("Order", status(1935, requested=65), ticket)
        assert 0.0 == bucket.pending
        assert 65.0 == bucket.costs["Order"]
        # as of when it came: the store read it after the half second's refill
        assert Seen(2000.0, 1935.0, 100.0, 100.5) == bucket.seen

    async def test_a_slow_request_s_answer_is_not_refilled_for_its_way_there(self):
        """A request takes 2 s to reach the store (a busy network or store), which reads the
        bucket empty just before answering: the next 50-point request waits half a second
        from the answer, not 0 (counted from the send, the 2 s of refill the store had
        counted already would be counted again, and Shopify would answer THROTTLED)."""
        clock = Clock()
        bucket = CostBucket({"Order": 50.0}, clock=clock)
        async with bucket.turn("Order") as ticket:
            clock.now += 2.0
            bucket.observe("Order", status(0, requested=50), ticket)
        assert 0.5 == room_wait(bucket.seen, bucket.pending, 50.0, clock.now)

    async def test_a_request_waits_until_its_cost_fits(self):
        """The bucket seen at 30 points: a 75-point request is held about 0.45 s (real time
        here: the clock is the loop's), then goes."""
        loop = asyncio.get_running_loop()
        bucket = CostBucket({"Order": 75.0}, clock=loop.time)
        bucket.observe("Order", status(30), Ticket(loop.time(), 75.0, 0.0))
        started = loop.time()
        async with bucket.turn("Order"):
            waited = loop.time() - started
        assert 0.4 <= waited < 1.0, waited

    async def test_until_the_first_answer_one_request_at_a_time(self):
        bucket = CostBucket({"Order": 75.0}, max_in_flight=4, clock=Clock())
        first_in = asyncio.Event()
        release = asyncio.Event()
        order: list[str] = []

        async def first() -> None:
            async with bucket.turn("Order") as ticket:
                order.append("first")
                first_in.set()
                await release.wait()
                bucket.observe("Order", status(1925), ticket)

        async def second() -> None:
            await first_in.wait()
            async with bucket.turn("Order"):
                order.append("second")

        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        await first_in.wait()
        await asyncio.sleep(0.05)
        assert ["first"] == order  # the second holds for the first's answer
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert ["first", "second"] == order


    async def test_an_answer_read_before_others_were_charged_is_not_trusted_past_them(self):
        """A and B out together; the store reads the bucket for A (500), charges B, answers
        B (400) first and A last: A's 500 must not undo B's charge. Taken less what was
        answered while A was out, the estimate stays at 400 at most."""
        clock = Clock()
        bucket = CostBucket({"Order": 100.0}, clock=clock)
        bucket.seen = Seen(2000.0, 600.0, 100.0, clock.now)
        async with bucket.turn("Order") as a:
            async with bucket.turn("Order") as b:
                bucket.observe("Order", status(400, requested=100), b)
            assert 100.0 == bucket.pending  # A's
            bucket.observe("Order", status(500, requested=100), a)
        assert 400.0 == bucket.seen.now(clock.now)

    async def test_a_request_answered_without_a_status_is_taken_as_charged(self):
        clock = Clock()
        bucket = CostBucket({"Order": 100.0}, clock=clock)
        bucket.seen = Seen(2000.0, 600.0, 100.0, clock.now)
        with pytest.raises(ConnectionError):
            async with bucket.turn("Order"):
                raise ConnectionError("the answer was lost")
        assert 500.0 == bucket.seen.now(clock.now)
        assert 0.0 == bucket.pending


class TestSlots:
    async def test_no_more_than_max_in_flight_at_once(self):
        slots = Slots(3)
        inside = peak = 0

        async def one() -> None:
            nonlocal inside, peak
            async with slots.turn():
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(one() for _ in range(20)))
        assert 3 == peak

    def test_at_least_one(self):
        with pytest.raises(ValueError):
            Slots(0)
