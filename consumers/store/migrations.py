"""The schema, as numbered migrations applied in order (each recorded in schema_migrations).
Never edit one that shipped: append. `{serial_pk}` and `{blob}` are filled per engine."""

from __future__ import annotations

from consumers.store.contract import StoreMissing, Tx
from router.times import now_iso

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at TEXT NOT NULL,
                PRIMARY KEY (consumer, event_id))""",
            """CREATE TABLE orders (
                order_id TEXT PRIMARY KEY,
                source TEXT,
                status TEXT,
                shipping_address TEXT,
                note TEXT,
                created_at TEXT,
                updated_at TEXT,
                version INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE order_lines (
                order_id TEXT NOT NULL REFERENCES orders (order_id),
                line_no INTEGER NOT NULL,
                sku TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                reserved INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (order_id, line_no))""",
            """CREATE TABLE stock (
                sku TEXT NOT NULL,
                location TEXT NOT NULL,
                on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
                reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
                as_of TEXT,
                PRIMARY KEY (sku, location))""",
            """CREATE TABLE shipments (
                tracking_code TEXT NOT NULL,
                carrier TEXT NOT NULL,
                order_id TEXT,
                status TEXT,
                rank INTEGER,
                occurred_at TEXT,
                PRIMARY KEY (tracking_code, carrier))""",
            """CREATE TABLE shipment_events (
                id {serial_pk},
                tracking_code TEXT NOT NULL,
                carrier TEXT NOT NULL,
                status TEXT,
                occurred_at TEXT,
                detail TEXT,
                event_id TEXT)""",
            "CREATE INDEX shipment_events_by_shipment"
            " ON shipment_events (tracking_code, carrier, occurred_at)",
            """CREATE TABLE outbox (
                id {serial_pk},
                kind TEXT NOT NULL,
                routing_key TEXT NOT NULL,
                body {blob} NOT NULL,
                message_id TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                sent_at TEXT)""",
            "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
        ],
    ),
    (
        # Reservations at any location: each line records where it holds stock. Lines
        # reserved before this were reserved at the one location then used, "default".
        2,
        [
            "ALTER TABLE order_lines ADD COLUMN location TEXT",
            "UPDATE order_lines SET location = 'default' WHERE reserved > 0",
            "CREATE INDEX order_lines_by_sku ON order_lines (sku, order_id)",
            "CREATE INDEX orders_waiting ON orders (status, created_at)",
        ],
    ),
    (
        # Outbound webhooks: each subscription's state, and every delivery attempt.
        3,
        [
            """CREATE TABLE subscription_state (
                name TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                reason TEXT,
                failures INTEGER NOT NULL DEFAULT 0,
                first_failure_at TEXT,
                updated_at TEXT NOT NULL)""",
            """CREATE TABLE deliveries (
                id {serial_pk},
                subscription TEXT NOT NULL,
                message_id TEXT NOT NULL,
                event_id TEXT,
                type TEXT,
                attempt INTEGER NOT NULL,
                status_code INTEGER,
                error TEXT,
                latency_ms REAL,
                at TEXT NOT NULL)""",
            "CREATE INDEX deliveries_by_message ON deliveries (message_id)",
            "CREATE INDEX deliveries_by_event ON deliveries (event_id)",
            "CREATE INDEX outbox_by_time ON outbox (created_at)",
        ],
    ),
    (
        # Shipping looks orders up by their shipments, and shipments by their order.
        4,
        ["CREATE INDEX shipments_by_order ON shipments (order_id)"],
    ),
    (
        # Orders as fulfillment sees them: what an open order's status is made of (its
        # allocation, its payment, why it is held) and when an unpaid one gives its stock
        # back; lines that do not ship (gift cards, tips, downloads) reserve nothing.
        5,
        [
            "ALTER TABLE orders ADD COLUMN allocation TEXT",
            "ALTER TABLE orders ADD COLUMN payment_status TEXT",
            "ALTER TABLE orders ADD COLUMN hold_reason TEXT",
            "ALTER TABLE orders ADD COLUMN expires_at TEXT",
            "ALTER TABLE order_lines ADD COLUMN ships INTEGER NOT NULL DEFAULT 1",
            "UPDATE orders SET allocation = status"
            " WHERE status IN ('allocated', 'partially_allocated', 'backordered')",
            "CREATE INDEX orders_by_allocation ON orders (allocation, created_at)",
            "CREATE INDEX orders_expiring ON orders (expires_at) WHERE expires_at IS NOT NULL",
        ],
    ),
    (
        # Effects versioned by the body's own timestamps: the source's version of each order
        # (Shopify updated_at, WooCommerce date_modified_gmt), and the refunds applied, so a
        # replayed body is stale rather than a new effect.
        6,
        [
            "ALTER TABLE orders ADD COLUMN source_version TEXT",
            """CREATE TABLE order_refunds (
                order_id TEXT NOT NULL,
                refund_id TEXT NOT NULL,
                applied_at TEXT NOT NULL,
                PRIMARY KEY (order_id, refund_id))""",
        ],
    ),
    (
        # The audit consumer's record of every accepted event, and the business keys its
        # data names (order ids, tracking codes, SKUs), so one id finds its events.
        7,
        [
            """CREATE TABLE audit_events (
                event_id TEXT PRIMARY KEY,
                source TEXT,
                type TEXT NOT NULL,
                schema TEXT,
                received_at TEXT,
                occurred_at TEXT,
                recorded_at TEXT NOT NULL)""",
            """CREATE TABLE event_keys (
                event_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (event_id, kind, value))""",
            "CREATE INDEX event_keys_by_value ON event_keys (kind, value)",
        ],
    ),
    (
        # What each consumer did with each message, attempt by attempt: the handler's word
        # (in the effect's transaction), or the retry (with its delay) or dead letter (with
        # its reason) once the broker confirmed that copy.
        8,
        [
            """CREATE TABLE consumer_attempts (
                id {serial_pk},
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                delay_seconds INTEGER,
                reason TEXT,
                replayed_at TEXT,
                at TEXT NOT NULL)""",
            "CREATE INDEX consumer_attempts_by_event ON consumer_attempts (event_id)",
        ],
    ),
    (
        # The event that caused each notification (its body's `cause`), so a trace finds the
        # notifications of an event; rows written before this have none.
        9,
        [
            "ALTER TABLE outbox ADD COLUMN cause TEXT",
            "CREATE INDEX outbox_by_cause ON outbox (cause)",
        ],
    ),
    (
        # What operators did in the console (who, what, when, on which ids): its Audit page.
        10,
        [
            """CREATE TABLE operator_actions (
                id {serial_pk},
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                role TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                ids TEXT NOT NULL,
                outcome TEXT NOT NULL)""",
            "CREATE INDEX operator_actions_by_at ON operator_actions (at)",
        ],
    ),
    (
        # The console's Overview: per source, events received in the last hour and the last
        # one, read through this index rather than by scanning every event recorded.
        11,
        ["CREATE INDEX audit_events_by_source ON audit_events (source, received_at)"],
    ),
    (
        # The console's Subscriptions and Overview: each subscription's newest attempts and
        # its last success, read every few seconds, through these rather than by scanning
        # every delivery attempt ever recorded.
        12,
        [
            "CREATE INDEX deliveries_by_subscription ON deliveries (subscription, id)",
            "CREATE INDEX deliveries_succeeded ON deliveries (subscription, at)"
            " WHERE status_code >= 200 AND status_code < 300",
        ],
    ),
    (
        # Console sessions ended by logging out (the cookie's nonce), kept until the cookie
        # would have expired anyway: a copy of a logged-out cookie is no session, in any
        # console process on this store.
        13,
        [
            """CREATE TABLE console_logouts (
                nonce TEXT PRIMARY KEY,
                expires TEXT NOT NULL)""",
            "CREATE INDEX console_logouts_by_expiry ON console_logouts (expires)",
        ],
    ),
    (
        # What an operator action was done with, besides its ids, as JSON (a test payload's
        # topic and body digest); rows written before this have none.
        14,
        ["ALTER TABLE operator_actions ADD COLUMN detail TEXT"],
    ),
    (
        # Digests of the bodies applied at an order's source_version: Shopify's updated_at
        # has whole seconds, so two changes within one second share a version; one whose
        # content is not among these is applied, a repeat of one that is stays stale.
        15,
        ["ALTER TABLE orders ADD COLUMN source_digests TEXT"],
    ),
    (
        # The labels consumer's purchase per order (consumers.labels): the carrier's shipment
        # id is recorded (committed) before the label is bought, so a retry looks it up
        # instead of buying again. `reference` is ours, given to the carrier (the order id,
        # then ORDER.N for the N-th purchase after a void or a hold). The label's tracking
        # code also goes into shipments, where the carrier's tracking webhooks find it.
        16,
        [
            """CREATE TABLE labels (
                order_id TEXT PRIMARY KEY,
                purchase INTEGER NOT NULL,
                reference TEXT NOT NULL,
                carrier_api TEXT NOT NULL,
                state TEXT NOT NULL,
                shipment_id TEXT,
                tracking_code TEXT,
                carrier TEXT,
                service TEXT,
                rate_amount TEXT,
                rate_currency TEXT,
                label_url TEXT,
                tracking_url TEXT,
                hold_reason TEXT,
                message TEXT,
                refund_status TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL)""",
            "CREATE INDEX labels_by_tracking_code ON labels (tracking_code)",
        ],
    ),
    (
        # The storefront consumer's write-backs: one row per order and tracking number,
        # `pending` (committed before the store is called: a retry calls it again and the
        # driver finds its own earlier write), then `done` with the store's id for it. A
        # source whose credentials the store refused is paused until they work again.
        17,
        [
            """CREATE TABLE writebacks (
                order_id TEXT NOT NULL,
                tracking_code TEXT NOT NULL,
                source TEXT NOT NULL,
                state TEXT NOT NULL,
                external_id TEXT,
                already_done INTEGER,
                attempts INTEGER NOT NULL DEFAULT 0,
                message TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (order_id, tracking_code))""",
            """CREATE TABLE storefront_pauses (
                source TEXT PRIMARY KEY,
                message TEXT NOT NULL,
                paused_at TEXT NOT NULL)""",
        ],
    ),
    (
        # When a paused store was last tried (the storefront consumer's probe: at most one
        # write-back per [storefront] probe_every while paused); none yet: paused_at counts.
        18,
        ["ALTER TABLE storefront_pauses ADD COLUMN probed_at TEXT"],
    ),
]

_DIALECT = {
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY", "blob": "BLOB"},
    "postgresql": {"serial_pk": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"},
}

_CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
)


_HAS_SCHEMA = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
              " AND name = 'schema_migrations'",
    "postgresql": "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'schema_migrations'"
                  " AND schemaname = current_schema()",
}


async def has_schema(tx: Tx, dialect: str) -> bool:
    """True if migrate() has run in this database (it holds a store, maybe empty of rows)."""
    return bool(await tx.fetchval(_HAS_SCHEMA[dialect]))


async def migrate(tx: Tx, dialect: str, *, create: bool = True) -> list[int]:
    """Apply the missing migrations inside `tx` (the caller serialises); the versions applied.
    With create=False, a database that never had a store is StoreMissing, left untouched."""
    if not create and not await has_schema(tx, dialect):
        raise StoreMissing("no store there: the database has none of our tables (has a "
                           "consumer ever run against it?)")
    await tx.execute(_CREATE_MIGRATIONS)
    done = {row["version"] for row in await tx.fetch("SELECT version FROM schema_migrations")}
    applied = []
    for version, statements in MIGRATIONS:
        if version in done:
            continue
        for statement in statements:
            await tx.execute(statement.format(**_DIALECT[dialect]))
        await tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            version,
            now_iso(),
        )
        applied.append(version)
    return applied
