"""The runner's acker: batches finishing out of order never ack each other's messages."""

from __future__ import annotations

from consumers.acking import Acker


class FakeChannel:
    pass


class FakeMessage:
    def __init__(self, tag: int, channel: FakeChannel) -> None:
        self.delivery_tag = tag
        self.channel = channel
        self.body = b'{"id": "e", "type": "t"}'
        self.acks: list[bool] = []

    async def ack(self, multiple: bool = False) -> None:
        self.acks.append(multiple)


async def test_acks_only_the_settled_run_at_the_front():
    channel = FakeChannel()
    messages = [FakeMessage(tag, channel) for tag in range(1, 7)]
    acker = Acker()
    for message in messages:
        acker.delivered(message)
    # The second batch (tags 3-4) finishes first: nothing may be acked yet.
    await acker.settle(messages[2:4], set())
    assert [m.acks for m in messages] == [[]] * 6
    # The first batch (1-2) finishes: one multiple-ack up to tag 4 covers both batches.
    await acker.settle(messages[0:2], set())
    assert [m.acks for m in messages] == [[], [], [], [True], [], []]
    # The last batch, with tag 6 nacked already: the ack stops at tag 5.
    await acker.settle(messages[4:6], {id(messages[5])})
    assert [m.acks for m in messages] == [[], [], [], [True], [True], []]


async def test_one_ack_per_channel_after_a_reconnect():
    old, new = FakeChannel(), FakeChannel()
    messages = [FakeMessage(1, old), FakeMessage(2, old), FakeMessage(1, new)]
    acker = Acker()
    for message in messages:
        acker.delivered(message)
    await acker.settle(messages, set())
    assert [m.acks for m in messages] == [[], [True], [True]]
