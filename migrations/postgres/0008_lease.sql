-- The writer's lease: which daemon (or exclusive command) writes this
-- store, across machines. `epoch` grows with every new holder; each batch
-- checks it inside its transaction (fencing), so a holder that lost the
-- lease can never commit again. `holder` is empty once released. `beat`
-- and `beat_at` are renewed by the holder's heartbeat; the lease lapses
-- when `beat_at` (the database's own clock) is older than the lapse time.
CREATE TABLE {p}_lease (
    id      SMALLINT    PRIMARY KEY CHECK (id = 1),
    epoch   BIGINT      NOT NULL,
    holder  TEXT        NOT NULL,
    host    TEXT        NOT NULL,
    pid     BIGINT      NOT NULL,
    beat    BIGINT      NOT NULL,
    beat_at TIMESTAMPTZ NOT NULL
);
