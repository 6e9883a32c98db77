-- The store's policy, as migrations/sqlite/0005_config.sql.
CREATE TABLE {p}_config (
    id               INTEGER NOT NULL,
    mode             TEXT    NOT NULL,
    mode_changed_at  TEXT    NOT NULL,
    mode_changed_by  TEXT    NOT NULL,
    capacity         BIGINT,
    used_bytes       BIGINT  NOT NULL DEFAULT 0,
    file_count       BIGINT  NOT NULL DEFAULT 0,
    CONSTRAINT {p}_config_pk PRIMARY KEY (id),
    CONSTRAINT {p}_config_one CHECK (id = 1),
    CONSTRAINT {p}_config_mode CHECK (mode IN ('edit', 'rw', 'ro', 'ar'))
);
-- A store that existed before this table: edit mode, usage counted once.
INSERT INTO {p}_config (id, mode, mode_changed_at, mode_changed_by, capacity,
                        used_bytes, file_count)
SELECT 1, 'edit',
       to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       'migration', NULL,
       (SELECT coalesce(sum(size), 0) FROM {p}_inodes WHERE kind = 1),
       (SELECT count(*) FROM {p}_inodes WHERE kind = 1)
WHERE EXISTS (SELECT 1 FROM {p}_inodes)
