"""Concurrent copies of one delivery: the later ones wait for the first one's outcome."""

from __future__ import annotations

import asyncio

import pytest

from router.dedup import InFlight, signed_content_key
from router.errors import BrokerUnavailable


class TestInFlight:
    async def test_nobody_publishing_means_no_wait(self):
        """With no request publishing the key, wait answers at once: not waited."""
        assert (False, None) == await InFlight().wait("k")

    async def test_a_waiter_gets_the_outcome_once_the_first_ends(self):
        """A waiter is woken when the first request's block ends; the key is free then."""
        in_flight = InFlight()
        release = asyncio.Event()

        async def first() -> None:
            with in_flight.lead(("k",)):
                await release.wait()

        leader = asyncio.create_task(first())
        await asyncio.sleep(0)
        waiter = asyncio.create_task(in_flight.wait("k"))
        await asyncio.sleep(0)
        assert not waiter.done()
        release.set()
        assert (True, None) == await asyncio.wait_for(waiter, 5)
        await leader
        assert 0 == len(in_flight)

    async def test_a_broker_failure_is_handed_to_the_waiters(self):
        """When the first request fails with BrokerUnavailable, waiters get that failure."""
        in_flight = InFlight()
        release = asyncio.Event()

        async def first() -> None:
            with in_flight.lead(("k",)):
                await release.wait()
                raise BrokerUnavailable("no confirm", retry_after=5)

        leader = asyncio.create_task(first())
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(in_flight.wait("k")) for _ in range(3)]
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(BrokerUnavailable):
            await leader
        for waited, failure in await asyncio.gather(*waiters):
            assert waited and isinstance(failure, BrokerUnavailable)
            assert 5 == failure.retry_after

    async def test_a_cancelled_waiter_leaves_the_others_their_outcome(self):
        """Cancelling one waiter (its client went away) does not cancel the outcome."""
        in_flight = InFlight()
        release = asyncio.Event()

        async def first() -> None:
            with in_flight.lead(("k",)):
                await release.wait()

        leader = asyncio.create_task(first())
        await asyncio.sleep(0)
        gone, staying = (asyncio.create_task(in_flight.wait("k")) for _ in range(2))
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        assert (True, None) == await asyncio.wait_for(staying, 5)
        await leader

    async def test_a_delivery_known_by_two_keys_is_waited_for_on_either(self):
        """Leading (id, signed content): a copy under a new id that has the same signed
        content waits on the second key and gets the same outcome; both keys are freed."""
        in_flight = InFlight()
        release = asyncio.Event()

        async def first() -> None:
            with in_flight.lead(("id-1", "body")):
                await release.wait()
                raise BrokerUnavailable("refused", retry_after=5)

        leader = asyncio.create_task(first())
        await asyncio.sleep(0)
        assert "id-1" in in_flight and "body" in in_flight
        waiter = asyncio.create_task(in_flight.wait("body"))
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(BrokerUnavailable):
            await leader
        waited, failure = await asyncio.wait_for(waiter, 5)
        assert waited and isinstance(failure, BrokerUnavailable)
        assert 0 == len(in_flight)


class TestSignedContentKey:
    def test_the_same_body_under_another_topic_is_another_key(self):
        """One key per (source, topic, body); a change of any of them is another key."""
        keys = {signed_content_key(source, topic, body)
                for source in ("shopify", "woocommerce") for topic in ("orders/create", "")
                for body in (b"{}", b"{ }")}
        assert 8 == len(keys)
        assert signed_content_key("shopify", "", b"{}") == signed_content_key("shopify", "", b"{}")
