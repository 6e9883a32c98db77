-- Namespace and inode metadata. `{p}` is replaced by the table prefix so that
-- several stores can share one database.
CREATE TABLE {p}_store (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    store_id    TEXT    NOT NULL,
    backing     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- AUTOINCREMENT: inode numbers (and object names derived from them) are never reused.
CREATE TABLE {p}_inodes (
    ino            INTEGER PRIMARY KEY AUTOINCREMENT,
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

-- AUTOINCREMENT: the id is the readdir cookie, so it must never be reused
-- while a directory stream may still hold it.
CREATE TABLE {p}_dentries (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    parent  INTEGER NOT NULL,
    name    BLOB    NOT NULL,
    ino     INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX {p}_dentries_ino ON {p}_dentries (ino);

CREATE TABLE {p}_xattrs (
    ino    INTEGER NOT NULL,
    name   BLOB    NOT NULL,
    value  BLOB    NOT NULL,
    PRIMARY KEY (ino, name)
) WITHOUT ROWID;
