"""Outbound webhooks: `notify.*` events become signed webhooks to subscribers.

Two stages, both in this process:

    fan-out    queue `notifications` (notify.#) -> one copy per subscription that wants the
               type (and is enabled in the config) on its own queue `deliver.<name>`,
               confirmed by the broker, then ack.
    delivery   per subscription, its own channel and HTTP connection pool, so one slow or
               dead endpoint never delays the others: consume `deliver.<name>`, POST the body
               signed with Standard Webhooks (webhook-id = the message id, the same on every
               attempt; one `v1,` signature per secret), record the attempt, then:

        2xx                         delivered: ack
        410 Gone                    the subscription is disabled; the message is kept
        anything else, a timeout,   retried through `deliver.<name>.retry.<s>` (the ladder in
        a connection error, 3xx     [notifications]; Retry-After on 429/502/503/504 picks the
        (redirects are not          first rung at least that long), then `deliver.<name>.dead`
        followed)                   with the reason; ack once the copy is confirmed

After `pause_after` consecutive failures spanning at least `pause_window` seconds the
subscription is paused: its consumer stops and its messages wait (parked) in its queue.
`python -m router subscriptions enable NAME` turns it back on and they flow again. The state
lives in the store (subscription_state), so the CLI and every notifications process see it.
Every attempt is a row in `deliveries` (`python -m router deliveries EVENT_ID`), committed
before the ack; attempts that finish while a write is in flight share the next commit
(AttemptLog). The state is read once a second, not per message.

Addresses are checked at start-up (a URL that resolves to a private, loopback or link-local
address is refused unless the subscription says allow_private) and again at every connect
(guard.GuardedResolver), so DNS that changes later cannot reach them either.
Response bodies are read up to max_response_bytes.

    notification.py   the body subscribers receive, and the queues deliveries wait in
    fanout.py         Notifications: the consumer process, fan-out and its deliverers
    deliverer.py      Deliverer: one subscription's queue, paused and resumed by its state
    sender.py         Sender: sign and POST one delivery (Standard Webhooks); retry policy
    guard.py          the SSRF guard: DNS answers checked at start-up and at every connect
    state.py          each subscription's state (enabled, paused, disabled) in the store
    attempts.py       AttemptLog: every attempt a row in `deliveries`, in group commits
    subscriptions.py  what operators do to subscriptions, as data (the CLI and the console)
    admin.py          `router subscriptions ...` and `router deliveries ...`, printed
"""
