"""RabbitMQ: everything the router and the consumers say to the broker.

    wire.py        the AMQP 0-9-1 frames of a confirmed publish, encoded by hand (pure)
    protocol.py    ConfirmingPublisher: a publish-only asyncio protocol with confirms
    connect.py     how every connection is opened (TLS, heartbeat; a cluster's addresses in turn)
    publisher.py   Publisher: a confirming connection to the events exchange that reconnects
    reconnect.py   the one back-off loop for (re)connecting
    topology.py    exchanges, queues, bindings and retry ladders, as data
    messages.py    copies of delivered messages for retries, dead letters and replays
    dlq.py         `router dlq list|show|replay|purge`
    errors.py      the broker's errors, and BROKER_ERRORS

Topology, consumers and operator commands use aio-pika; only the hot publish path uses our
own client.
"""
