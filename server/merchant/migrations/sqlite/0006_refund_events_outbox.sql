-- Refund events in the webhook outbox: a refund that becomes SUCCESS,
-- CLOSED or ABNORMAL writes `refund_succeeded`, `refund_closed` or
-- `refund_abnormal`, sequenced with its combined order's events.
--
-- SQLite cannot alter a CHECK constraint, so the table is rebuilt (the
-- procedure of https://sqlite.org/lang_altertable.html#otheralter): new
-- table, copy every row, drop the old one, rename, recreate the index.
-- Nothing references outbox_events and it has no triggers; the migration
-- runs in one transaction, so a failure leaves the old table as it was.

CREATE TABLE outbox_events_0006 (
    -- Stable id the receiver dedupes on (`evt_` + 32 hex digits).
    id                   TEXT    NOT NULL PRIMARY KEY,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    -- 1, 2, … per order: events of one order (refund events included) are
    -- delivered in this order.
    seq                  INTEGER NOT NULL,
    kind                 TEXT    NOT NULL
        CHECK (kind IN ('paid', 'closed', 'payment_error',
                        'refund_succeeded', 'refund_closed', 'refund_abnormal')),
    -- The exact JSON body sent (the same bytes on every attempt).
    payload              TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      INTEGER NOT NULL,
    delivered_at         INTEGER,
    last_error           TEXT,
    -- A delivering instance's claim: nobody else sends it before this time.
    lease_until          INTEGER,
    UNIQUE (combine_out_trade_no, seq)
) STRICT;

INSERT INTO outbox_events_0006 (id, combine_out_trade_no, seq, kind, payload, created_at,
    attempts, next_attempt_at, delivered_at, last_error, lease_until)
SELECT id, combine_out_trade_no, seq, kind, payload, created_at,
    attempts, next_attempt_at, delivered_at, last_error, lease_until
FROM outbox_events;

DROP TABLE outbox_events;
ALTER TABLE outbox_events_0006 RENAME TO outbox_events;

-- The delivery worker scans undelivered events by due time.
CREATE INDEX outbox_events_due ON outbox_events (next_attempt_at)
    WHERE delivered_at IS NULL;
