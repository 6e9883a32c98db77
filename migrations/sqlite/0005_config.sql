-- The store's policy: its mode (a state machine: edit | rw -> ro -> ar,
-- ro -> rw with confirmation), who changed it last and when (RFC 3339
-- UTC), its capacity, and the usage the capacity is checked against
-- (bytes of regular files and their number), kept by every batch.
CREATE TABLE {p}_config (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    mode             TEXT    NOT NULL CHECK (mode IN ('edit', 'rw', 'ro', 'ar')),
    mode_changed_at  TEXT    NOT NULL,
    mode_changed_by  TEXT    NOT NULL,
    capacity         INTEGER,
    used_bytes       INTEGER NOT NULL DEFAULT 0,
    file_count       INTEGER NOT NULL DEFAULT 0
);
-- A store that existed before this table: edit mode, usage counted once.
INSERT INTO {p}_config (id, mode, mode_changed_at, mode_changed_by, capacity,
                        used_bytes, file_count)
SELECT 1, 'edit', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'migration', NULL,
       (SELECT coalesce(sum(size), 0) FROM {p}_inodes WHERE kind = 1),
       (SELECT count(*) FROM {p}_inodes WHERE kind = 1)
WHERE EXISTS (SELECT 1 FROM {p}_inodes)
