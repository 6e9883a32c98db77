-- The write-ahead intent log, as migrations/sqlite/0002_wal.sql. Times are
-- RFC 3339 UTC text with `Z`; `seq` numbers rows in insertion order.
CREATE SEQUENCE {p}_wal_seq AS BIGINT;
CREATE TABLE {p}_wal (
    seq             BIGINT  NOT NULL DEFAULT nextval('{p}_wal_seq'),
    transaction_id  TEXT    NOT NULL,
    operation_type  TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    file_id         TEXT,
    operation_data  TEXT    NOT NULL,
    error_message   TEXT,
    started_at      TEXT    NOT NULL,
    completed_at    TEXT,
    duration_ms     DOUBLE PRECISION,
    user_id         TEXT,
    -- What recovery (or the operation itself) finally did, in words.
    outcome         TEXT,
    CONSTRAINT {p}_wal_pk PRIMARY KEY (seq),
    CONSTRAINT {p}_wal_txid UNIQUE (transaction_id),
    CONSTRAINT {p}_wal_status
        CHECK (status IN ('pending', 'committed', 'rolled_back', 'failed'))
);
ALTER SEQUENCE {p}_wal_seq OWNED BY {p}_wal.seq;
CREATE INDEX {p}_wal_pending ON {p}_wal (seq) WHERE status = 'pending';
CREATE INDEX {p}_wal_done ON {p}_wal (status, seq);
