-- Refunds of sub-orders, each by the sub-order's own merchant. A row is
-- written before WeChat Pay is called (status PROCESSING, no refund_id yet),
-- so a retry re-sends the same out_refund_no and the same body. Times are
-- Unix seconds; amounts are fen.
CREATE TABLE refunds (
    out_refund_no         TEXT    NOT NULL PRIMARY KEY,
    combine_out_trade_no  TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    mchid                 TEXT    NOT NULL,
    out_trade_no          TEXT    NOT NULL,
    transaction_id        TEXT    NOT NULL,
    amount                INTEGER NOT NULL CHECK (amount >= 1),
    total                 INTEGER NOT NULL CHECK (total >= 1),
    reason                TEXT,
    status                TEXT    NOT NULL
        CHECK (status IN ('PROCESSING', 'SUCCESS', 'CLOSED', 'ABNORMAL')),
    refund_id             TEXT,
    user_received_account TEXT,
    success_time          TEXT,
    idempotency_key       TEXT    UNIQUE,
    request_sha256        TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    FOREIGN KEY (mchid, out_trade_no) REFERENCES sub_orders (mchid, out_trade_no)
) STRICT;

CREATE INDEX refunds_sub_order ON refunds (mchid, out_trade_no);
CREATE INDEX refunds_order ON refunds (combine_out_trade_no);
-- The reconciliation worker looks for refunds still PROCESSING.
CREATE INDEX refunds_processing ON refunds (updated_at) WHERE status = 'PROCESSING';

-- Every refund transition, append-only like order_events.
CREATE TABLE refund_events (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    out_refund_no   TEXT    NOT NULL REFERENCES refunds (out_refund_no) ON DELETE RESTRICT,
    from_status     TEXT,
    to_status       TEXT    NOT NULL,
    source          TEXT    NOT NULL CHECK (source IN ('create', 'api', 'notify', 'query')),
    notification_id TEXT,
    detail          TEXT    NOT NULL,
    at              INTEGER NOT NULL
) STRICT;

CREATE INDEX refund_events_refund ON refund_events (out_refund_no, id);

CREATE TRIGGER refund_events_no_update BEFORE UPDATE ON refund_events
BEGIN
    SELECT RAISE(ABORT, 'refund_events is append-only');
END;

CREATE TRIGGER refund_events_no_delete BEFORE DELETE ON refund_events
BEGIN
    SELECT RAISE(ABORT, 'refund_events is append-only');
END;
