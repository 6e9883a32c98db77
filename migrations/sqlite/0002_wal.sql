-- The write-ahead intent log. Every mutation leaves a row. Rows for
-- operations with side effects in BACKING (object creation, content
-- changes, object removal) are durable as `pending` before the side effect,
-- and recovery at mount rolls each pending row forward or back.
-- Times are RFC 3339 UTC text with `Z`.
CREATE TABLE {p}_wal (
    seq             INTEGER PRIMARY KEY,
    transaction_id  TEXT    NOT NULL UNIQUE,
    operation_type  TEXT    NOT NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('pending', 'committed', 'rolled_back', 'failed')),
    file_id         TEXT,
    operation_data  TEXT    NOT NULL,
    error_message   TEXT,
    started_at      TEXT    NOT NULL,
    completed_at    TEXT,
    duration_ms     REAL,
    user_id         TEXT,
    -- What recovery (or the operation itself) finally did, in words.
    outcome         TEXT
);
CREATE INDEX {p}_wal_pending ON {p}_wal (seq) WHERE status = 'pending';
CREATE INDEX {p}_wal_done ON {p}_wal (status, seq);
