-- Namespace and inode metadata, as migrations/sqlite/0001_init.sql (same
-- tables, columns and meaning). `{p}` is the table prefix, so several
-- stores share one database. u64 values are stored as BIGINT bit patterns
-- (`as i64` both ways); names, link targets and attribute values are
-- BYTEA: bytes, never text. Every constraint, index and sequence is named
-- `{p}_...` explicitly, so migrate::longest_suffix sees every generated
-- name and the prefix can be bounded (PostgreSQL truncates at 63 bytes).
CREATE TABLE {p}_store (
    id           INTEGER NOT NULL,
    store_id     TEXT    NOT NULL,
    backing      TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    -- Inode numbers below this may have been handed out before a crash.
    ino_reserved BIGINT  NOT NULL DEFAULT 0,
    CONSTRAINT {p}_store_pk PRIMARY KEY (id),
    CONSTRAINT {p}_store_one CHECK (id = 1)
);

CREATE TABLE {p}_inodes (
    ino            BIGINT  NOT NULL,
    file_id        TEXT    NOT NULL,
    kind           BIGINT  NOT NULL,
    perm           BIGINT  NOT NULL,
    uid            BIGINT  NOT NULL,
    gid            BIGINT  NOT NULL,
    nlink          BIGINT  NOT NULL,
    size           BIGINT  NOT NULL,
    atime          BIGINT  NOT NULL,
    mtime          BIGINT  NOT NULL,
    ctime          BIGINT  NOT NULL,
    crtime         BIGINT  NOT NULL,
    rdev           BIGINT  NOT NULL DEFAULT 0,
    parent         BIGINT  NOT NULL,
    target         BYTEA,
    created_by     TEXT    NOT NULL DEFAULT '',
    original_name  BYTEA   NOT NULL,
    CONSTRAINT {p}_inodes_pk PRIMARY KEY (ino),
    CONSTRAINT {p}_inodes_file_id UNIQUE (file_id)
);
CREATE INDEX {p}_inodes_orphans ON {p}_inodes (nlink) WHERE nlink = 0;

-- The id is the readdir cookie, allocated by the daemon in increasing order.
CREATE TABLE {p}_dentries (
    id      BIGINT NOT NULL,
    parent  BIGINT NOT NULL,
    name    BYTEA  NOT NULL,
    ino     BIGINT NOT NULL,
    kind    BIGINT NOT NULL,
    CONSTRAINT {p}_dentries_pk PRIMARY KEY (id),
    CONSTRAINT {p}_dentries_name UNIQUE (parent, name)
);
CREATE INDEX {p}_dentries_ino ON {p}_dentries (ino);
CREATE INDEX {p}_dentries_list ON {p}_dentries (parent, id);

CREATE TABLE {p}_xattrs (
    ino    BIGINT NOT NULL,
    name   BYTEA  NOT NULL,
    value  BYTEA  NOT NULL,
    CONSTRAINT {p}_xattrs_pk PRIMARY KEY (ino, name)
);
