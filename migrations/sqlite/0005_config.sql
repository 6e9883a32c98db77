-- The store's policy: its mode (a state machine: edit | rw -> ro -> ar,
-- ro -> rw with confirmation) and capacity, with who changed the mode
-- last and when (RFC 3339 UTC). A single row.
CREATE TABLE {p}_config (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    mode             TEXT    NOT NULL CHECK (mode IN ('edit', 'rw', 'ro', 'ar')),
    mode_changed_at  TEXT    NOT NULL,
    mode_changed_by  TEXT    NOT NULL,
    capacity         INTEGER
);
