-- The server-to-server order API: idempotency keys and one-time pay links.
-- Times are Unix seconds.

-- One row per merchant idempotency key: the SHA-256 of the request it first
-- came with and the order number it was given. The same key with the same
-- request finds the same order; with another request it is refused.
CREATE TABLE intake_keys (
    idempotency_key      TEXT    NOT NULL PRIMARY KEY,
    request_sha256       TEXT    NOT NULL,
    combine_out_trade_no TEXT    NOT NULL,
    created_at           INTEGER NOT NULL
) STRICT;

-- A pay link: an order waiting for its payer. Only the SHA-256 of the token
-- is stored; the order (without a payer) is kept as JSON until the link is
-- claimed after OAuth, which creates it with the payer's openid.
CREATE TABLE pay_links (
    token_sha256         TEXT    NOT NULL PRIMARY KEY,
    combine_out_trade_no TEXT    NOT NULL UNIQUE,
    draft                TEXT    NOT NULL,
    status               TEXT    NOT NULL
        CHECK (status IN ('open', 'claimed', 'closed')),
    payer_openid         TEXT,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    claimed_at           INTEGER
) STRICT;
