-- The webhook outbox: one row per order event the merchant's backend must
-- learn about (paid, closed, payment error), written in the same transaction
-- as the state change and delivered afterwards, oldest first per order,
-- until the receiver answers 2xx. Times are Unix seconds.

CREATE TABLE outbox_events (
    -- Stable id the receiver dedupes on (`evt_` + 32 hex digits).
    id                   TEXT    NOT NULL PRIMARY KEY,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    -- 1, 2, … per order: events of one order are delivered in this order.
    seq                  BIGINT  NOT NULL,
    kind                 TEXT    NOT NULL
        CHECK (kind IN ('paid', 'closed', 'payment_error')),
    -- The exact JSON body sent (the same bytes on every attempt).
    payload              TEXT    NOT NULL,
    created_at           BIGINT  NOT NULL,
    attempts             BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at      BIGINT  NOT NULL,
    delivered_at         BIGINT,
    last_error           TEXT,
    -- A delivering instance's claim: nobody else sends it before this time.
    lease_until          BIGINT,
    UNIQUE (combine_out_trade_no, seq)
);

-- The delivery worker scans undelivered events by due time.
CREATE INDEX outbox_events_due ON outbox_events (next_attempt_at)
    WHERE delivered_at IS NULL;
