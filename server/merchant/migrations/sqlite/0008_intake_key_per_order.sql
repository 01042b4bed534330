-- An order number belongs to one idempotency key: a second key naming the
-- same number is refused (ORDER_NUMBER_USED), even when two such requests
-- race. Rows a database may hold from before this rule keep the earliest key.
DELETE FROM intake_keys
WHERE EXISTS (
    SELECT 1 FROM intake_keys AS earlier
    WHERE earlier.combine_out_trade_no = intake_keys.combine_out_trade_no
      AND (earlier.created_at < intake_keys.created_at
           OR (earlier.created_at = intake_keys.created_at
               AND earlier.idempotency_key < intake_keys.idempotency_key))
);

CREATE UNIQUE INDEX intake_keys_one_per_order ON intake_keys (combine_out_trade_no);
