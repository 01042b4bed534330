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
    prepay_expires_at    BIGINT,
    time_expire          BIGINT,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    notified_at          BIGINT,
    -- The reconciliation worker's claim: nobody else works on the order
    -- before this time.
    lease_until          BIGINT
);

-- The reconciliation worker scans open orders by age.
CREATE INDEX combine_orders_open ON combine_orders (created_at)
    WHERE state IN ('NOTPAY', 'USERPAYING');

CREATE TABLE sub_orders (
    mchid                TEXT    NOT NULL,
    out_trade_no         TEXT    NOT NULL,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    position             BIGINT  NOT NULL,
    description          TEXT    NOT NULL,
    attach               TEXT    NOT NULL,
    amount               BIGINT  NOT NULL CHECK (amount >= 1),
    transaction_id       TEXT,
    payer_amount         BIGINT,
    bank_type            TEXT,
    success_time         TEXT,
    PRIMARY KEY (mchid, out_trade_no),
    UNIQUE (combine_out_trade_no, position)
);

CREATE TABLE order_events (
    id                   BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    from_state           TEXT,
    to_state             TEXT    NOT NULL,
    source               TEXT    NOT NULL
        CHECK (source IN ('create', 'notify', 'query', 'close', 'expiry')),
    notification_id      TEXT,
    detail               TEXT    NOT NULL,
    at                   BIGINT  NOT NULL
);

CREATE INDEX order_events_order ON order_events (combine_out_trade_no, id);

-- The event log is evidence: rows are never changed or removed.
CREATE FUNCTION order_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_events is append-only';
END;
$$;

CREATE TRIGGER order_events_no_change BEFORE UPDATE OR DELETE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_append_only();

CREATE TRIGGER order_events_no_truncate BEFORE TRUNCATE ON order_events
    FOR EACH STATEMENT EXECUTE FUNCTION order_events_append_only();

CREATE TABLE notifications (
    id                   TEXT    NOT NULL PRIMARY KEY,
    combine_out_trade_no TEXT    NOT NULL
        REFERENCES combine_orders (combine_out_trade_no) ON DELETE RESTRICT,
    body_sha256          TEXT    NOT NULL,
    outcome              TEXT    NOT NULL CHECK (outcome IN ('applied', 'duplicate')),
    received_at          BIGINT  NOT NULL
);
