-- The writer's lease, as on PostgreSQL (see migrations/postgres). A SQLite
-- store is guarded by the flock in BACKING (one machine); the table exists
-- so both engines have the same schema, and stays empty.
CREATE TABLE {p}_lease (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   INTEGER NOT NULL,
    holder  TEXT    NOT NULL,
    host    TEXT    NOT NULL,
    pid     INTEGER NOT NULL,
    beat    INTEGER NOT NULL,
    beat_at TEXT    NOT NULL
);
