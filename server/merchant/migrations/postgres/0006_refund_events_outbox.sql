-- Refund events in the webhook outbox: a refund that becomes SUCCESS,
-- CLOSED or ABNORMAL writes `refund_succeeded`, `refund_closed` or
-- `refund_abnormal`, sequenced with its combined order's events.
ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_kind_check;
ALTER TABLE outbox_events ADD CONSTRAINT outbox_events_kind_check
    CHECK (kind IN ('paid', 'closed', 'payment_error',
                    'refund_succeeded', 'refund_closed', 'refund_abnormal'));
