-- Namespace and inode metadata. `{p}` is replaced by the table prefix so that
-- several stores can share one database.
CREATE TABLE {p}_store (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    store_id    TEXT    NOT NULL,
    backing     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    -- Inode numbers below this may have been handed out before a crash:
    -- allocation resumes above it, so numbers (and object names) are never reused.
    ino_reserved INTEGER NOT NULL DEFAULT 0
);

-- Inode numbers are allocated by the daemon (see ino_reserved), never reused.
CREATE TABLE {p}_inodes (
    ino            INTEGER PRIMARY KEY,
    file_id        TEXT    NOT NULL UNIQUE,
    kind           INTEGER NOT NULL,
    perm           INTEGER NOT NULL,
    uid            INTEGER NOT NULL,
    gid            INTEGER NOT NULL,
    nlink          INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    atime          INTEGER NOT NULL,
    mtime          INTEGER NOT NULL,
    ctime          INTEGER NOT NULL,
    crtime         INTEGER NOT NULL,
    rdev           INTEGER NOT NULL DEFAULT 0,
    parent         INTEGER NOT NULL,
    target         BLOB,
    created_by     TEXT    NOT NULL DEFAULT '',
    original_name  BLOB    NOT NULL
);
CREATE INDEX {p}_inodes_orphans ON {p}_inodes (nlink) WHERE nlink = 0;

-- The id is the readdir cookie, allocated by the daemon in increasing order.
CREATE TABLE {p}_dentries (
    id      INTEGER PRIMARY KEY,
    parent  INTEGER NOT NULL,
    name    BLOB    NOT NULL,
    ino     INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX {p}_dentries_ino ON {p}_dentries (ino);
-- readdir pages walk a directory in cookie order without sorting it.
CREATE INDEX {p}_dentries_list ON {p}_dentries (parent, id);

CREATE TABLE {p}_xattrs (
    ino    INTEGER NOT NULL,
    name   BLOB    NOT NULL,
    value  BLOB    NOT NULL,
    PRIMARY KEY (ino, name)
) WITHOUT ROWID;
