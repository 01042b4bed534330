-- Bills: reconciliation lists the sub-orders paid on a day. success_time is
-- RFC 3339 text; its date part (as written) narrows the scan, the exact
-- instant range is checked after reading.
CREATE INDEX sub_orders_success_day ON sub_orders (substr(success_time, 1, 10))
    WHERE success_time IS NOT NULL;
