-- Combined orders, their sub-orders, the append-only event log and the
-- notifications already received. Times are Unix seconds; amounts are fen.

CREATE TABLE combine_orders (
    combine_out_trade_no TEXT    NOT NULL PRIMARY KEY,
    combine_mchid        TEXT    NOT NULL,
    combine_appid        TEXT    NOT NULL,
    payer_openid         TEXT    NOT NULL,
    state                TEXT    NOT NULL
        CHECK (state IN ('NOTPAY', 'USERPAYING', 'SUCCESS', 'CLOSED', 'PAYERROR', 'REFUND')),
    prepay_id            TEXT,
    prepay_expires_at    INTEGER,
    time_expire          INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    notified_at          INTEGER,
    -- The reconciliation worker's claim: nobody else works on the order
    -- before this time.
    lease_until          INTEGER
) STRICT;

-- The reconciliation worker scans open orders by age.
CREATE INDEX combine_orders_open ON combine_orders (created_at)
    WHERE state IN ('NOTPAY', 'USERPAYING');

CREATE TABLE sub_orders (
    mchid                TEXT    NOT NULL,
    out_trade_no         TEXT    NOT NULL,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    position             INTEGER NOT NULL,
    description          TEXT    NOT NULL,
    attach               TEXT    NOT NULL,
    amount               INTEGER NOT NULL CHECK (amount >= 1),
    transaction_id       TEXT,
    payer_amount         INTEGER,
    bank_type            TEXT,
    success_time         TEXT,
    PRIMARY KEY (mchid, out_trade_no),
    UNIQUE (combine_out_trade_no, position)
) STRICT;

CREATE TABLE order_events (
    id                   INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    from_state           TEXT,
    to_state             TEXT    NOT NULL,
    source               TEXT    NOT NULL
        CHECK (source IN ('create', 'notify', 'query', 'close', 'expiry')),
    notification_id      TEXT,
    detail               TEXT    NOT NULL,
    at                   INTEGER NOT NULL
) STRICT;

CREATE INDEX order_events_order ON order_events (combine_out_trade_no, id);

-- The event log is evidence: rows are never changed or removed.
CREATE TRIGGER order_events_no_update BEFORE UPDATE ON order_events
BEGIN
    SELECT RAISE(ABORT, 'order_events is append-only');
END;

CREATE TRIGGER order_events_no_delete BEFORE DELETE ON order_events
BEGIN
    SELECT RAISE(ABORT, 'order_events is append-only');
END;

CREATE TABLE notifications (
    id                   TEXT    NOT NULL PRIMARY KEY,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    body_sha256          TEXT    NOT NULL,
    outcome              TEXT    NOT NULL CHECK (outcome IN ('applied', 'duplicate')),
    received_at          INTEGER NOT NULL
) STRICT;
