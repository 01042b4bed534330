-- OAuth `state` values already used to sign in (SHA-256, hex): a state
-- completes one login only, on any instance sharing the database. A row is
-- kept until the state's login cookie would have expired anyway.
CREATE TABLE oauth_states_used (
    state_sha256 TEXT    NOT NULL PRIMARY KEY,
    expires_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX oauth_states_used_expiry ON oauth_states_used (expires_at);
